"""Encoder-side analysis speed with full-size architectures and random weights (no downloads).

Times sedic's own analysis code (sedic.analysis.describe.LocalVLM and
sedic.analysis.grounding.Grounder) on models built from configs:
  - a Qwen2.5-VL-3B-shaped VLM (36 layers, hidden 2048; vision tower 32 blocks, hidden 1280)
    generating exactly --new-tokens tokens greedily after the image + the sedic prompt,
  - Grounding DINO with a Swin-B backbone and a BERT-base text encoder (K object names, one batch),
  - SAM ViT-H (image embedding once, then every box of every name).
Random weights generate noise, so generation is forced to its length with min_new_tokens; the
boxes are random (each name keeps its 8 best, as in the real pipeline).

Tokenizers are built in-process: a byte-level BPE trained on the prompt stands in for Qwen's
(the prompt gets a similar token count); the image token count is the real Qwen2.5-VL one.

    python benchmarks/encode_speed.py --device cuda --dtype bfloat16            # the real thing
    python benchmarks/encode_speed.py --device cuda --static-cache --compile    # speed levers
    python benchmarks/encode_speed.py --device cpu --layer-scale 0.125 --new-tokens 32 --size 384x256
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def trained_tokenizer(texts):
    """Byte-level BPE trained on `texts` with Qwen's special tokens (stands in for Qwen's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sedic.analysis.tiny import _SPECIALS

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=_SPECIALS)


def build_vlm(scale, settings, dtype, device):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from sedic.analysis.describe import build_prompt
    from sedic.analysis.tiny import qwen25vl_config, vlm_processor

    prompt = build_prompt(settings.num_objects, settings)
    tok = trained_tokenizer([prompt] * 20 + [prompt.lower(), "a red car with shiny paint, the sky is blue"])
    processor = vlm_processor(tok, max_pixels=settings.vlm_max_pixels)
    cfg = qwen25vl_config(tok, hidden=2048, layers=scaled(36, scale), heads=16, kv_heads=2, intermediate=11008,
                          vocab_size=151936, vision_depth=scaled(32, scale), vision_hidden=1280,
                          vision_heads=16, vision_intermediate=3420,
                          fullatt=[i for i in (7, 15, 23, 31) if i < scaled(32, scale)] or [0],
                          mrope_section=(16, 24, 24))
    cfg.text_config.tie_word_embeddings = True
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    return model, processor


def build_grounding(scale, dtype, device, short_side=800):
    from transformers import (
        BertConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    from sedic.analysis.tiny import bert_tokenizer, grounding_config

    swin = SwinConfig(image_size=384, embed_dim=128, depths=[2, 2, scaled(18, scale), 2], num_heads=[4, 8, 16, 32],
                      window_size=12, out_features=["stage2", "stage3", "stage4"])
    layers = scaled(6, scale)
    cfg = grounding_config(swin=swin, bert=BertConfig(num_hidden_layers=scaled(12, scale)), d_model=256,
                           layers=layers, dec_layers=max(2, layers), ffn=2048, heads=8, queries=900, points=4,
                           max_text_len=256)
    with torch.device(device):
        model = GroundingDinoForObjectDetection._from_config(cfg, dtype=dtype).eval()
    return model, GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": short_side,
                                                          "longest_edge": short_side * 1333 // 800}),
        tokenizer=bert_tokenizer())


def build_sam(scale, dtype, device, side=1024):
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor, SamVisionConfig

    n = scaled(32, scale)
    vc = SamVisionConfig(hidden_size=1280, num_hidden_layers=n, num_attention_heads=16, image_size=side,
                         global_attn_indexes=[i for i in (7, 15, 23, 31) if i < n] or [n - 1])
    with torch.device(device):
        model = SamModel._from_config(SamConfig(vision_config=vc.to_dict(),
                                                 prompt_encoder_config={"image_size": side}), dtype=dtype).eval()
    return model, SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": side}, pad_size={"height": side, "width": side}))


def _load():
    try:
        import os

        return round(os.getloadavg()[0], 1)  # other processes on the machine skew CPU timings
    except OSError:
        return None


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    ap.add_argument("--size", default="768x512", help="image WxH (default: Kodak's 768x512)")
    ap.add_argument("--layer-scale", type=float, default=1.0,
                    help="fraction of the layers of every model (1 = full size; for slow machines)")
    ap.add_argument("--new-tokens", type=int, default=None,
                    help="generated tokens (default: sedic's budget for K objects, max_new_tokens_for)")
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--detector-side", type=int, default=800,
                    help="Grounding DINO input shortest edge (default 800, the model's own)")
    ap.add_argument("--sam-side", type=int, default=1024, help="SAM input side (default 1024, the model's own)")
    ap.add_argument("--static-cache", action="store_true", help="static KV cache")
    ap.add_argument("--compile", action="store_true", help="compiled decoding step (with --static-cache)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs after one warm-up run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    from PIL import Image

    from sedic.analysis import resolve_dtype
    from sedic.analysis.describe import LocalVLM, build_prompt, max_new_tokens_for, reduce_image
    from sedic.analysis.grounding import Grounder
    from sedic.analysis.settings import AnalysisSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = AnalysisSettings(num_objects=args.objects, static_cache=args.static_cache, compile=args.compile)
    dtype = resolve_dtype(args.dtype, args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    new_tokens = args.new_tokens or max_new_tokens_for(settings, args.objects)

    t = time.perf_counter()
    torch.manual_seed(0)
    vlm = LocalVLM(*build_vlm(args.layer_scale, settings, dtype, args.device), settings, "bench")
    grounder = Grounder(*build_grounding(args.layer_scale, dtype, args.device, args.detector_side),
                        *build_sam(args.layer_scale, dtype, args.device, args.sam_side),
                        replace(settings, box_threshold=0.0))
    build_s = time.perf_counter() - t
    names = ["red car", "old wooden house", "sky"][: args.objects] + [f"object {i}" for i in range(3, args.objects)]
    prompt = build_prompt(args.objects, settings)
    pil_vlm = reduce_image(image, max_pixels=settings.vlm_max_pixels)
    pil = Image.fromarray(image)
    n_prompt = vlm.processor(text=[vlm.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True, tokenize=False)], images=[pil_vlm], return_tensors="pt")["input_ids"].shape[1]

    def run():
        times = {}
        sync(args.device)
        t0 = time.perf_counter()
        vlm.generate(pil_vlm, prompt, new_tokens, min_new_tokens=new_tokens)
        sync(args.device)
        t1 = time.perf_counter()
        boxes = grounder.boxes(pil, names)
        sync(args.device)
        t2 = time.perf_counter()
        masks = grounder.segment(pil, np.concatenate(boxes))
        sync(args.device)
        t3 = time.perf_counter()
        times.update(describe_s=t1 - t0, detect_s=t2 - t1, segment_s=t3 - t2, total_s=t3 - t0,
                     boxes=int(sum(len(b) for b in boxes)), masks=int(len(masks)))
        return times

    with torch.inference_mode():
        warm = run()
        runs = [run() for _ in range(args.repeat)]
    best = {k: min(r[k] for r in runs) for k in ("describe_s", "detect_s", "segment_s", "total_s")}
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    result = dict(device=device_name, dtype=str(dtype).replace("torch.", ""), size=args.size,
                  layer_scale=args.layer_scale, objects=args.objects, prompt_tokens=int(n_prompt),
                  new_tokens=new_tokens, static_cache=args.static_cache, compile=args.compile,
                  build_s=round(build_s, 2), warmup_total_s=round(warm["total_s"], 3),
                  boxes=runs[-1]["boxes"], **{k: round(v, 3) for k, v in best.items()},
                  tokens_per_s=round(new_tokens / best["describe_s"], 1),
                  detector_side=args.detector_side, sam_side=args.sam_side,
                  load_average=_load(), torch=torch.__version__,
                  command=" ".join(["python", "benchmarks/encode_speed.py"] + (argv or sys.argv[1:])))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
