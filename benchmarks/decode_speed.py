"""Decode-speed benchmark of the multistage decoder with full-size SD 2.1-base architectures.

Builds the SD 2.1-base UNet, the DiffBIR IRControlNet (the backbone's own construction from the
UNet) and the VAE from configs with random weights (nothing is downloaded; the pictures are
meaningless, the arithmetic is the real one), then times `restore()` on a synthetic image with
three objects and the paper's schedule (10 + 10 + 10 + 20 steps, CFG 3.5 / 7).

Reports ms per stage, UNet evaluations per second (one evaluation = one batch row through
ControlNet + UNet), TFLOP/s (FLOPs of one CFG step counted with FlopCounterMode, times the steps,
over the sampling time) and peak memory.

    python benchmarks/decode_speed.py                       # GPU if present, paper setting, 768x512
    python benchmarks/decode_speed.py --device cpu --size 256x256 --object-steps 2 --final-steps 4
    python benchmarks/decode_speed.py --dtype bfloat16 --compile reduce-overhead --warmup 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sedic.restoration.backbone import SD_LATENT_SCALE, SD_SCHEDULER_CONFIG, Backbone, tiny_tokenizer  # noqa: E402
from sedic.restoration.ircontrolnet import ircontrolnet_from_unet  # noqa: E402
from sedic.restoration.settings import OragSettings, PipelineSettings  # noqa: E402
from sedic.restoration.pipeline import restore  # noqa: E402
from sedic.restoration.sampler import Denoiser, StageSpec  # noqa: E402
from sedic.restoration.settings import DecoderSettings  # noqa: E402
from sedic.semantics import SemanticObject, Semantics  # noqa: E402

# stabilityai/stable-diffusion-2-1-base unet/config.json (architecture fields)
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
    unet = UNet2DConditionModel(**SD21_UNET)
    controlnet = ircontrolnet_from_unet(unet)
    vae = AutoencoderKL(**SD21_VAE)
    text = CLIPTextModel(CLIPTextConfig(**SD21_TEXT))
    bb = Backbone(unet=unet, controlnet=controlnet, vae=vae, tokenizer=tiny_tokenizer(), text_encoder=text,
                  scheduler_config=dict(SD_SCHEDULER_CONFIG), latent_scale=SD_LATENT_SCALE, condition="latent",
                  name="sd21-base+ircontrolnet (random weights)")
    for m in bb.modules():
        m.eval().requires_grad_(False)
    return bb.to(device, dtype)


def synthetic(width: int, height: int):
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 17.0)], -1) * 255
    gh, gw = -(-height // 8), -(-width // 8)
    gy, gx = np.mgrid[0:gh, 0:gw]
    boxes = [(0.1, 0.1, 0.5, 0.6), (0.45, 0.3, 0.95, 0.9), (0.2, 0.6, 0.6, 0.95)]
    objs = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m = (gx >= x0 * gw) & (gx < x1 * gw) & (gy >= y0 * gh) & (gy < y1 * gh)
        objs.append(SemanticObject(["lighthouse", "rocks", "boat"][k],
                                   "a detailed description of the object's shape, colour and texture, "
                                   "about thirty words long as the analysis writes them for each object", m))
    return img.clip(0, 255).astype(np.uint8), Semantics("a lighthouse on rocks by the sea with a boat, photo", objs)


def count_flops(width: int, height: int) -> dict:
    """FLOPs of one batched-CFG step and of the VAE at this size, on the meta device (no arithmetic)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_UNET)
        controlnet = ircontrolnet_from_unet(unet)
        vae = AutoencoderKL(**SD21_VAE)
        lh, lw = -(-height // 64) * 8, -(-width // 64) * 8
        z = torch.zeros(1, 4, lh, lw)
        emb = torch.zeros(1, 77, SD21_UNET["cross_attention_dim"])
        img = torch.zeros(1, 3, lh * 8, lw * 8)
    bb = Backbone(unet=unet, controlnet=controlnet, vae=vae, tokenizer=None, text_encoder=None,
                  scheduler_config=dict(SD_SCHEDULER_CONFIG), latent_scale=SD_LATENT_SCALE, condition="latent")
    out = {"size": f"{width}x{height}", "latent": f"{lw}x{lh}"}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            Denoiser(bb)(z, 500, StageSpec(cond=emb, uncond=emb, cfg=7.0, control=z))
        out["gflop_per_cfg_step"] = round(fc.get_total_flops() / 1e9, 1)
        with FlopCounterMode(display=False) as fc:
            vae.encode(img)
        out["gflop_vae_encode"] = round(fc.get_total_flops() / 1e9, 1)
        with FlopCounterMode(display=False) as fc:
            vae.decode(z)
        out["gflop_vae_decode"] = round(fc.get_total_flops() / 1e9, 1)
    out["tflop_paper_schedule"] = round((50 * out["gflop_per_cfg_step"] + out["gflop_vae_encode"]
                                         + out["gflop_vae_decode"]) / 1e3, 2)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    ap.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"])
    ap.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the image")
    ap.add_argument("--object-steps", type=int, default=10)
    ap.add_argument("--final-steps", type=int, default=20)
    ap.add_argument("--sequential-cfg", action="store_true", help="two network calls per step instead of one batch")
    ap.add_argument("--no-orag", action="store_true", help="object stages without attention guidance")
    ap.add_argument("--warmup", type=int, default=None, help="untimed decodes first (default: 1 on CUDA, 0 on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--flops-only", action="store_true",
                    help="count the FLOPs of one CFG step and of the VAE on the meta device (no timing, seconds)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    pipe = PipelineSettings(dtype=args.dtype, compile=args.compile, batched_cfg=not args.sequential_cfg)
    from sedic.restoration.pipeline import resolve_dtype

    dtype = resolve_dtype(args.dtype, device)
    settings = DecoderSettings(object_steps=args.object_steps, final_steps=args.final_steps, pipeline=pipe,
                             orag=OragSettings(enabled=not args.no_orag))
    if args.flops_only:
        result = count_flops(width, height)
        print(json.dumps(result, indent=2))
        return

    t0 = time.perf_counter()
    bb = build_full_backbone(device, dtype)
    build_s = time.perf_counter() - t0
    image, sem = synthetic(width, height)

    rows = []
    bb.unet.register_forward_pre_hook(lambda mod, a, kw: rows.append((a[0] if a else kw["sample"]).shape[0]),
                                      with_kwargs=True)

    marks = []

    def progress(i, n, label):
        sync(device)
        marks.append((label, time.perf_counter()))

    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    t0 = time.perf_counter()
    for _ in range(warmup):
        restore(image, sem, settings, seed=0, backbone=bb)
    sync(device)
    warmup_s = time.perf_counter() - t0

    rows.clear()
    marks.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    out = restore(image, sem, settings, seed=0, backbone=bb, progress=progress)
    sync(device)
    end = time.perf_counter()
    assert out.shape == image.shape

    # Stage k runs from its progress call to the next; the first also holds the VAE encode, the
    # last the VAE decode and colour correction.
    stamps = [start] + [t for _, t in marks[1:]] + [end]
    stages = [{"stage": label, "ms": round(1000 * (b - a), 1)} for (label, _), a, b in zip(marks, stamps, stamps[1:])]
    total_s = end - start
    evaluations = sum(rows)
    steps = 3 * args.object_steps + args.final_steps

    # FLOPs of one CFG step (ControlNet + UNet on the whole latent, batch 2), with ORAG off
    from torch.utils.flop_counter import FlopCounterMode

    lh, lw = -(-height // 64) * 8, -(-width // 64) * 8
    z = torch.randn(1, 4, lh, lw, device=device)
    emb = bb.encode_prompt(["a photo"])
    den = Denoiser(bb, batched_cfg=True)
    spec = StageSpec(cond=emb, uncond=emb, cfg=7.0, control=z)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        den(z, 500, spec)
    step_flops = fc.get_total_flops()
    sampling_flops = step_flops * steps  # sequential CFG does the same arithmetic in two calls

    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB (CUDA allocated)"
        dev_name = torch.cuda.get_device_name(device)
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB (process peak RSS, weights included)"
        dev_name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    result = {
        "command": " ".join(["python", "benchmarks/decode_speed.py"] + (argv if argv is not None else sys.argv[1:])),
        "device": dev_name, "dtype": str(dtype).replace("torch.", ""), "compile": args.compile,
        "batched_cfg": not args.sequential_cfg, "orag": not args.no_orag,
        "size": f"{width}x{height}", "latent": f"{lw}x{lh}",
        "schedule": f"3 objects x {args.object_steps} + {args.final_steps} steps, CFG 3.5/7",
        "build_s": round(build_s, 1), "warmup_decodes": warmup, "warmup_s": round(warmup_s, 1),
        "total_s": round(total_s, 3), "stages": stages,
        "unet_evaluations": evaluations, "unet_evaluations_per_s": round(evaluations / total_s, 2),
        "ms_per_cfg_step": round(1000 * total_s / steps, 1),
        "gflop_per_cfg_step": round(step_flops / 1e9, 1),
        "tflop_per_s": round(sampling_flops / total_s / 1e12, 3),
        "peak_memory": peak,
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
