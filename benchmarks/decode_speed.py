"""Decode-speed benchmark of the multistage decoder with full-size SD 2.1-base architectures.

Builds the SD 2.1-base UNet, the DiffBIR IRControlNet (the backbone's own construction from the
UNet) and the VAE from configs with random weights (nothing is downloaded; the pictures are
meaningless, the arithmetic is the real one), then times `restore()` on a synthetic image with
K objects (--objects, default 3) in the sequential schedule (the paper's: 10 steps per object +
20, CFG 3.5 / 7) or the fused one (--schedule fused: one pass of 20 steps, CFG 7).

Reports the first decode of the process (compilation or loading it from the on-disk cache
included), then, after warm-up, ms per stage, the median ms per CFG step, the whole decode (VAE
included), network rows (one row = one batch row through ControlNet + UNet), TFLOP/s (the decode's
FLOPs counted on the meta device over its time) and peak memory.

    python benchmarks/decode_speed.py --flops-only          # FLOPs per decode, both schedules, K = 3 and 8
    python benchmarks/decode_speed.py --matrix              # the GPU matrix (docs/performance.md)
    python benchmarks/decode_speed.py                       # GPU if present, paper setting, 768x512
    python benchmarks/decode_speed.py --device cpu --size 256x256 --object-steps 2 --final-steps 4
    python benchmarks/decode_speed.py --dtype bfloat16 --compile reduce-overhead --warmup 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sedic.restoration.backbone import SD_LATENT_SCALE, SD_SCHEDULER_CONFIG, Backbone, tiny_tokenizer  # noqa: E402
from sedic.restoration.backbones import backbone_spec  # noqa: E402
from sedic.restoration.ircontrolnet import ircontrolnet_from_unet  # noqa: E402
from sedic.restoration.pipeline import restore  # noqa: E402
from sedic.restoration.sampler import Denoiser, StageSpec  # noqa: E402
from sedic.restoration.settings import (  # noqa: E402
    DecoderSettings,  # noqa: E402
    OragSettings,
    PipelineSettings,
)
from sedic.semantics import SemanticObject, Semantics  # noqa: E402

# stabilityai/stable-diffusion-2-1-base unet/config.json (architecture fields)
SD21 = backbone_spec("sd21-ircontrolnet")  # the description of the networks built below
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, upcast_attention=False,
)
# vae/config.json
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
    norm_num_groups=32, sample_size=512, scaling_factor=SD_LATENT_SCALE,
)
# text_encoder/config.json (OpenCLIP ViT-H/14 text tower, 23 of 24 layers as diffusers ships it)
SD21_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=1,
)


def build_full_backbone(device, dtype) -> Backbone:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    # built on the target device: random initialisation of ~2 G parameters takes a minute on a CPU
    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_UNET)
        controlnet = ircontrolnet_from_unet(unet)
        vae = AutoencoderKL(**SD21_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD21_TEXT))
    bb = Backbone(unet=unet, controlnet=controlnet, vae=vae, tokenizer=tiny_tokenizer(), text_encoder=text,
                  scheduler_config=dict(SD_SCHEDULER_CONFIG), latent_scale=SD_LATENT_SCALE, spec=SD21,
                  name="sd21-base+ircontrolnet (random weights)")
    for m in bb.modules():
        m.eval().requires_grad_(False)
    return bb.to(device, dtype)


OBJECT_WORDS = ["lighthouse", "rocks", "boat", "gull", "house", "tree", "cloud", "flag"]


def synthetic(width: int, height: int, objects: int = 3):
    """A smooth synthetic image and `objects` overlapping box masks with ~30-word descriptions."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 17.0)], -1) * 255
    gh, gw = -(-height // 8), -(-width // 8)
    gy, gx = np.mgrid[0:gh, 0:gw]
    first = [(0.1, 0.1, 0.5, 0.6), (0.45, 0.3, 0.95, 0.9), (0.2, 0.6, 0.6, 0.95)]
    rng = np.random.default_rng(0)
    boxes = first[:objects]
    while len(boxes) < objects:
        x0, y0 = rng.uniform(0, 0.7, 2)
        boxes.append((x0, y0, x0 + rng.uniform(0.15, 0.3), y0 + rng.uniform(0.15, 0.3)))
    objs = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m = (gx >= x0 * gw) & (gx < x1 * gw) & (gy >= y0 * gh) & (gy < y1 * gh)
        objs.append(SemanticObject(OBJECT_WORDS[k % len(OBJECT_WORDS)],
                                   "a detailed description of the object's shape, colour and texture, "
                                   "about thirty words long as the analysis writes them for each object", m))
    return img.clip(0, 255).astype(np.uint8), Semantics("a lighthouse on rocks by the sea with a boat, photo", objs)


def _meta_backbone() -> Backbone:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_UNET)
        controlnet = ircontrolnet_from_unet(unet)
        vae = AutoencoderKL(**SD21_VAE)
    return Backbone(unet=unet, controlnet=controlnet, vae=vae, tokenizer=None, text_encoder=None,
                    scheduler_config=dict(SD_SCHEDULER_CONFIG), latent_scale=SD_LATENT_SCALE, spec=SD21)


def object_token_masks(semantics: Semantics, settings: DecoderSettings) -> list[torch.Tensor]:
    """Each object's token mask T_k in its own 77-token prompt, as the pipeline computes it
    (tokenizer: CLIP's BPE, which SD 2.1's OpenCLIP tokenizer shares; settings' prompt and tokens)."""
    from sedic.restoration.orag import object_token_mask

    return [object_token_mask(tiny_tokenizer(), o.name, o.description, settings.orag,
                              name_in_prompt=settings.pipeline.object_prompt == "name+description")
            for o in semantics.objects]


def fused_tokens(token_masks: list[torch.Tensor]) -> torch.Tensor:
    """The fused pass's token matrix (K, 77 + sum |T_k|), on the CPU, from pipeline.fused_context
    itself (run on 1-wide stand-in states: only the lengths matter here)."""
    from sedic.restoration.pipeline import fused_context

    _, tokens = fused_context(torch.zeros(1, 77, 1), torch.zeros(len(token_masks), 77, 1), token_masks)
    return tokens


def _cfg_step_flops(bb: Backbone, lh: int, lw: int, token_masks: list[torch.Tensor], fused: bool,
                    guided: bool) -> tuple[int, int]:
    """(all, cross-attention) FLOPs of one batched-CFG step (ControlNet + UNet, 2 rows) on the meta device.

    Sequential object stage: 77-token context, one object routed. Fused: the context of
    pipeline.fused_context, the overall prompt's 77 states plus each object's own |T_k| tokens
    (docs/orag.md, "Fused schedule"), with the K objects of `token_masks` routed. guided=False:
    no ORAG processors (the final stage, and unguided steps, which run the stock attention).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from sedic.restoration.orag import OragState, install, uninstall

    k = max(len(token_masks), 1) if fused else 1
    # the token matrix holds real values (on the CPU): ORAG reads which columns are the objects'
    tokens = fused_tokens(token_masks) if fused else torch.zeros(77, dtype=torch.bool)
    n_ctx = tokens.shape[-1]
    d = SD21_UNET["cross_attention_dim"]
    with torch.device("meta"):
        z = torch.zeros(1, 4, lh, lw)
        emb = torch.zeros(1, n_ctx, d)
        masks = torch.zeros(1, k, lh, lw)
    state = OragState(bb.levels) if guided else None
    spec = StageSpec(cond=emb, uncond=emb, cfg=7.0, control=z,
                     orag_mask=masks if guided else None, orag_tokens=tokens if guided else None)
    installed = []
    if guided:
        installed = [(bb.unet, install(bb.unet, state, label="unet")),
                     (bb.controlnet, install(bb.controlnet, state, label="controlnet"))]
        state.set_weight(0.4, "meta")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            Denoiser(bb, state=state)(z, 500, spec)
    finally:
        for model, originals in installed:
            uninstall(model, originals)
    counts = fc.get_flop_counts()
    cross = sum(sum(v.values()) for name, v in counts.items() if name.endswith(".attn2"))
    return fc.get_total_flops(), cross


def count_flops(width: int, height: int, object_counts=(3, 8), object_steps: int = 10, final_steps: int = 20,
                fused_steps: int = 20, exact: bool = False, settings: DecoderSettings | None = None) -> dict:
    """FLOPs per decode of both schedules at this size for each K, on the meta device (no arithmetic).

    Counted: ControlNet + UNet of every CFG step (ORAG's range computation included in the guided
    steps: every object step in the sequential schedule, every fused step with the defaults), the
    VAE encode and decode. Not counted: the text encoder (K + 2 prompts of 77 tokens, the same in
    both schedules, about 0.03 TFLOP each for OpenCLIP ViT-H), the scheduler and colour fix.
    The fused context is the real one for `synthetic(width, height, K)`'s object prompts under
    `settings` (default DecoderSettings()): 77 + the sum of the objects' token counts |T_k|.
    """
    from torch.utils.flop_counter import FlopCounterMode

    bb = _meta_backbone()
    lh, lw = -(-height // 64) * 8, -(-width // 64) * 8
    with torch.device("meta"):
        img = torch.zeros(1, 3, lh * 8, lw * 8)
        z = torch.zeros(1, 4, lh, lw)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            bb.vae.encode(img)
        vae_enc = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bb.vae.decode(z)
        vae_dec = fc.get_total_flops()
    settings = settings or DecoderSettings()
    plain, plain_cross = _cfg_step_flops(bb, lh, lw, [], fused=False, guided=False)
    obj, obj_cross = _cfg_step_flops(bb, lh, lw, [], fused=False, guided=True)
    out = {"size": f"{width}x{height}", "latent": f"{lw}x{lh}",
           "fused_context": "the overall prompt's 77 states + each object's own tokens |T_k| (no BOS, EOS or "
                            "padding; docs/orag.md), counted with CLIP's tokenizer on the synthetic object prompts",
           "gflop_vae_encode": round(vae_enc / 1e9, 1), "gflop_vae_decode": round(vae_dec / 1e9, 1),
           "gflop_cfg_step_plain": round(plain / 1e9, 1),
           "gflop_cfg_step_plain_cross_attention": round(plain_cross / 1e9, 1),
           "gflop_cfg_step_object": round(obj / 1e9, 1), "rows": []}
    for k in object_counts:
        seq = k * object_steps * obj + final_steps * plain + vae_enc + vae_dec
        token_masks = object_token_masks(synthetic(width, height, k)[1], settings)
        step, cross = _cfg_step_flops(bb, lh, lw, token_masks, fused=True, guided=True)
        fus = fused_steps * step + vae_enc + vae_dec
        object_tokens = [int(m.sum()) for m in token_masks]
        out["rows"].append({
            "objects": k,
            "sequential": {"cfg_steps": k * object_steps + final_steps,
                           "network_rows": 2 * (k * object_steps + final_steps),
                           "tflop": seq / 1e12 if exact else round(seq / 1e12, 1)},
            "fused": {"cfg_steps": fused_steps, "network_rows": 2 * fused_steps,
                      "context_tokens": 77 + sum(object_tokens), "object_tokens": object_tokens,
                      "gflop_cfg_step": round(step / 1e9, 1), "gflop_cfg_step_cross_attention": round(cross / 1e9, 1),
                      "tflop": fus / 1e12 if exact else round(fus / 1e12, 1)},
            "fused_over_sequential": round(fus / seq, 3),
        })
    return out


def flops_table(result: dict) -> str:
    lines = ["| K | schedule | CFG steps | network rows | context tokens | GFLOP per CFG step | "
             "of which cross-attention | TFLOP per decode | fused / sequential |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        k, seq, fus = row["objects"], row["sequential"], row["fused"]
        lines.append(f"| {k} | sequential | {seq['cfg_steps']} | {seq['network_rows']} | 77 | "
                     f"{result['gflop_cfg_step_object']} (object), {result['gflop_cfg_step_plain']} (final) | "
                     f"{result['gflop_cfg_step_plain_cross_attention']} (final) | {seq['tflop']} | |")
        lines.append(f"| {k} | fused | {fus['cfg_steps']} | {fus['network_rows']} | {fus['context_tokens']} | "
                     f"{fus['gflop_cfg_step']} | {fus['gflop_cfg_step_cross_attention']} | {fus['tflop']} | "
                     f"{100 * row['fused_over_sequential']:.1f} % |")
    return "\n".join(lines)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_and_device(device):
    if device.type == "cuda":
        return (f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB (CUDA allocated)",
                torch.cuda.get_device_name(device))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return (f"{peak_gib:.2f} GiB (process peak RSS, weights included)",
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")


def run_decode(args, argv) -> dict:
    """Build the full-size random-weight decoder, decode once cold (compile included), warm up, time one decode."""
    from sedic.restoration.pipeline import resolve_dtype

    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    dtype = resolve_dtype(args.dtype, device)
    pipe = PipelineSettings(dtype=args.dtype, compile=args.compile, batched_cfg=not args.sequential_cfg)
    settings = DecoderSettings(object_steps=args.object_steps, final_steps=args.final_steps, pipeline=pipe,
                               schedule=args.schedule, orag=OragSettings(enabled=not args.no_orag))
    t0 = time.perf_counter()
    bb = build_full_backbone(device, dtype)
    build_s = time.perf_counter() - t0
    image, sem = synthetic(width, height, args.objects)

    rows = []
    bb.unet.register_forward_pre_hook(lambda mod, a, kw: rows.append((a[0] if a else kw["sample"]).shape[0]),
                                      with_kwargs=True)
    marks, steps = [], []

    def progress(i, n, label):
        sync(device)
        marks.append((label, time.perf_counter()))

    def on_step(stage, n, step, n_steps):
        sync(device)
        steps.append((stage, step, time.perf_counter()))

    # first decode of the process: compilation (or loading it from the on-disk cache) included
    sync(device)
    t0 = time.perf_counter()
    restore(image, sem, settings, seed=0, backbone=bb)
    sync(device)
    first_s = time.perf_counter() - t0
    launched = os.environ.get("SEDIC_BENCH_LAUNCHED")
    start_to_first_image_s = time.time() - float(launched) if launched else None

    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    for _ in range(warmup):
        restore(image, sem, settings, seed=0, backbone=bb)
    rows.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    out = restore(image, sem, settings, seed=0, backbone=bb, progress=progress, on_step=on_step)
    sync(device)
    end = time.perf_counter()
    assert out.shape == image.shape

    # Stage k runs from its progress call to the next; the first also holds the VAE encode, the
    # last the VAE decode and colour correction. A CFG step is the time between two step hooks
    # of one stage (the network calls and the scheduler step, nothing else).
    stamps = [start] + [t for _, t in marks[1:]] + [end]
    stages = [{"stage": label, "ms": round(1000 * (b - a), 1)}
              for (label, _), (a, b) in zip(marks, pairwise(stamps), strict=True)]
    step_ms = [1000 * (b[2] - a[2]) for a, b in pairwise(steps) if a[0] == b[0]]
    total_s = end - start
    n_steps = len(steps)
    flops = count_flops(width, height, (args.objects,), args.object_steps, args.final_steps, args.final_steps,
                        exact=True, settings=settings)
    decode_tflop = flops["rows"][0][args.schedule]["tflop"]
    peak, dev_name = _peak_and_device(device)
    return {
        "command": " ".join(["python", "benchmarks/decode_speed.py"] + (argv if argv is not None else sys.argv[1:])),
        "device": dev_name, "dtype": str(dtype).replace("torch.", ""), "compile": args.compile,
        "batched_cfg": not args.sequential_cfg, "orag": not args.no_orag, "schedule": args.schedule,
        "objects": args.objects, "size": f"{width}x{height}", "latent": flops["latent"],
        "steps": (f"{args.objects} objects x {args.object_steps} + {args.final_steps} steps, CFG 3.5/7"
                  if args.schedule == "sequential" else f"one pass of {args.final_steps} steps, CFG 7"),
        "build_s": round(build_s, 1), "first_decode_s": round(first_s, 2),
        "start_to_first_image_s": None if start_to_first_image_s is None else round(start_to_first_image_s, 1),
        "warmup_decodes": warmup, "decode_s": round(total_s, 3), "stages": stages,
        "cfg_steps": n_steps, "ms_per_cfg_step_median": round(float(np.median(step_ms)), 1) if step_ms else None,
        "compile_s": round(first_s - total_s, 1) if args.compile != "none" else None,
        "network_rows": sum(rows), "tflop_per_decode": round(decode_tflop, 3),
        "tflop_per_s": round(decode_tflop / total_s, 4),
        "peak_memory": peak, "torch": torch.__version__,
    }


MATRIX = {"fp32": ("eager fp32", "float32", "none"), "bf16": ("bf16 batched CFG", "bfloat16", "none"),
          "graphs": ("bf16 + CUDA graphs", "bfloat16", "reduce-overhead")}


def run_matrix(args) -> list[dict]:
    """The GPU measurement matrix, each configuration in its own process.

    Compiled configurations run twice with one fresh compile cache per schedule: the first process
    compiles cold, the second starts from the on-disk cache (second-process start).
    """
    import subprocess
    import tempfile

    results = []
    cache_root = Path(tempfile.mkdtemp(prefix="sedic-bench-cache-"))
    for schedule in args.matrix_schedules.split(","):
        for label, dtype, compile_mode in (MATRIX[c] for c in args.matrix_configs.split(",")):
            runs = ("cold cache", "warm cache") if compile_mode != "none" else ("",)
            for run in runs:
                with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                    out = tmp.name
                cmd = [sys.executable, __file__, "--device", args.device, "--dtype", dtype, "--compile", compile_mode,
                       "--schedule", schedule, "--objects", str(args.objects), "--size", args.size,
                       "--object-steps", str(args.object_steps), "--final-steps", str(args.final_steps),
                       "--json", out] + (["--threads", str(args.threads)] if args.threads else [])
                env = dict(os.environ, SEDIC_BENCH_LAUNCHED=repr(time.time()),
                           TORCHINDUCTOR_CACHE_DIR=str(cache_root / schedule))
                print(f"# {schedule}, {label} {run}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    results.append({"schedule": schedule, "config": label, "run": run,
                                    "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]})
                    continue
                res = json.loads(Path(out).read_text())
                res.update(config=label, run=run)
                results.append(res)
    return results


def matrix_table(results: list[dict]) -> str:
    lines = ["| schedule | configuration | ms per CFG step | decode (VAE incl.) | first decode | compile | "
             "start to first image | peak memory |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['schedule']} | {r['config']} {r['run']} | failed: {r['error'][0]} | | | | | |")
            continue
        comp = "" if r["compile_s"] is None else f"{r['compile_s']} s"
        step = r["ms_per_cfg_step_median"] if r["ms_per_cfg_step_median"] is not None else "n/a (1 step per stage)"
        lines.append(f"| {r['schedule']} | {r['config']} {r['run']} | {step} | "
                     f"{r['decode_s']} s | {r['first_decode_s']} s | {comp} | {r['start_to_first_image_s']} s | "
                     f"{r['peak_memory']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    ap.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"])
    ap.add_argument("--schedule", default="sequential", choices=["sequential", "fused"])
    ap.add_argument("--objects", type=int, default=3, help="objects in the synthetic image (K)")
    ap.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the image")
    ap.add_argument("--object-steps", type=int, default=10)
    ap.add_argument("--final-steps", type=int, default=20, help="steps of the final stage (of the fused pass)")
    ap.add_argument("--sequential-cfg", action="store_true", help="two network calls per step instead of one batch")
    ap.add_argument("--no-orag", action="store_true", help="object stages without attention guidance")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed decodes after the first (default: 1 on CUDA, 0 on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--flops-only", action="store_true",
                    help="count FLOPs per decode of both schedules on the meta device (no timing, seconds)")
    ap.add_argument("--flop-objects", default="3,8", help="K values for --flops-only (default 3,8)")
    ap.add_argument("--matrix", action="store_true",
                    help="GPU: eager fp32, bf16 batched, bf16 + CUDA graphs (cold and warm compile cache), "
                         "each sequential and fused, one process each")
    ap.add_argument("--matrix-configs", default="fp32,bf16,graphs",
                    help="subset of the matrix: fp32, bf16, graphs (comma-separated)")
    ap.add_argument("--matrix-schedules", default="sequential,fused", help="schedules of the matrix")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    for c in args.matrix_configs.split(","):
        if c not in MATRIX:
            ap.error(f"unknown matrix configuration {c!r} (known: {', '.join(MATRIX)})")

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.flops_only:
        ks = tuple(int(k) for k in args.flop_objects.split(","))
        result = count_flops(width, height, ks, args.object_steps, args.final_steps, args.final_steps)
        print(json.dumps(result, indent=2))
        print(flops_table(result))
    elif args.matrix:
        result = run_matrix(args)
        print(json.dumps(result, indent=2))
        print(matrix_table(result))
    else:
        result = run_decode(args, argv)
        print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
