"""The multistage generative decoder: reference -> object 1 -> ... -> object K -> overall.

Everything between stages stays in latent space: the reference is VAE-encoded once and the result
decoded once. Stage k (1..K) is conditioned on (the ControlNet sees) the previous stage's latent and
starts from it, noised to `object_start_strength`; ORAG (orag.py) keeps it to object k. The final
stage uses the overall description and, by default, is conditioned on the object-restored latent
(the paper's figure); `final_condition="reference"` conditions it on the reference instead, as the
authors' code does. The fused schedule (settings.schedule = "fused") replaces all of this by one
pass from the reference in which every object prompt acts inside its mask at once. See docs/orag.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .orag import OragState, install, object_token_mask, uninstall
from .sampler import Denoiser, StageSpec, sample_stage


UNET_MULTIPLE = 64  # VAE factor 8 x three 2x down-samplings in SD's UNet
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BACKBONE_CACHE: dict = {}
_COMPILED: dict = {}


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: auto, {', '.join(_DTYPES)})") from None


def get_backbone(settings, device: torch.device, dtype: torch.dtype):
    """The backbone for these settings, loaded once per process and (models, device, dtype)."""
    from .backbone import load_backbone

    # every field that can change the models (not steps, guidance scales, prompts, ORAG, pipeline)
    not_models = {"object_steps", "object_cfg", "final_steps", "final_cfg", "negative_prompt", "schedule", "orag",
                  "pipeline"}
    models = tuple((f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings)
                   if f.name not in not_models)
    key = (models, str(device), dtype)
    if key not in _BACKBONE_CACHE:
        _BACKBONE_CACHE[key] = load_backbone(settings, device=device, dtype=dtype)
    return _BACKBONE_CACHE[key]


def stage_generator(seed: int, stage: int) -> torch.Generator:
    """A CPU generator per stage, derived from the file's seed (independent streams per stage)."""
    state = np.random.SeedSequence([int(seed) % 2 ** 64, stage]).generate_state(2, np.uint32)
    return torch.Generator("cpu").manual_seed(int(state[0]) << 31 ^ int(state[1]))


def pad_image(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right to multiples of `multiple` (top-left stays aligned)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflection needs the pad to be shorter than the image
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    x = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(x, k, dilation=dilation, groups=x.shape[1])


def _low_high(x: torch.Tensor, levels: int = 5):
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _blur(x, 2 ** i)
        high = high + (x - low)
        x = low
    return x, high


_WAVELET_HALO = 2 ** 5  # > 1 + 2 + 4 + 8 + 16: the reach of the five blurs of _low_high
_WAVELET_BAND = 256     # rows per band: a 12 MP image needed ~3 GB at once, a band a few MB


def _wavelet_fix(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The reference's lowest band (colour, tone, shading) + the output's detail bands, in row
    bands with a halo wider than the blurs reach, so the rows kept equal the whole-image result."""
    h = out.shape[-2]
    result = torch.empty_like(out)
    for y0 in range(0, h, _WAVELET_BAND):
        y1 = min(h, y0 + _WAVELET_BAND)
        a, b = max(0, y0 - _WAVELET_HALO), min(h, y1 + _WAVELET_HALO)
        band = _low_high(ref[..., a:b, :])[0] + _low_high(out[..., a:b, :])[1]
        result[..., y0:y1, :] = band[..., y0 - a:y1 - a, :]
    return result


def color_fix(out: torch.Tensor, ref: torch.Tensor, mode: str) -> torch.Tensor:
    """Pull the colours of `out` towards `ref` (both (1, 3, H, W) in [-1, 1])."""
    if mode == "wavelet":
        return _wavelet_fix(out, ref)
    if mode == "adain":
        dims = (-2, -1)
        mo, so = out.mean(dims, keepdim=True), out.std(dims, keepdim=True)
        mr, sr = ref.mean(dims, keepdim=True), ref.std(dims, keepdim=True)
        return (out - mo) / (so + 1e-6) * sr + mr
    return out


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels and FX graphs: $TORCHINDUCTOR_CACHE_DIR, else
    ~/.cache/sedic/torchinductor (inductor's own default is under /tmp, which reboots empty)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "sedic" / "torchinductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _compiled(module, mode: str):
    key = (id(module), mode)
    if key not in _COMPILED:
        compile_cache_dir()
        # A second process then loads the compiled graphs from disk instead of compiling again:
        # inductor's FX graph cache and AOTAutograd's cache (both on by default in recent torch;
        # set here so that an older default or an environment override does not silently lose it).
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        if hasattr(functorch_config, "enable_autograd_cache"):
            functorch_config.enable_autograd_cache = True
        # Shapes are static within a decode (one latent size, one context length per K); the ORAG
        # step weight, mask gates and CFG rows are tensors read at run time, not constants, so the
        # steps of a decode reuse one graph (two: guided and unguided).
        _COMPILED[key] = torch.compile(module, mode=None if mode == "default" else mode, fullgraph=False)
    return _COMPILED[key]


def _object_mask(obj, lh: int, lw: int, grid: tuple[int, int], device) -> torch.Tensor:
    m = np.asarray(obj.mask, dtype=bool)
    if m.shape != grid:
        raise InputError(f"mask of object {obj.name!r} is {m.shape[1]}x{m.shape[0]} cells, the latent grid "
                         f"of the image is {grid[1]}x{grid[0]}")
    t = torch.zeros((1, 1, lh, lw), dtype=torch.bool)
    t[0, 0, :grid[0], :grid[1]] = torch.from_numpy(m.copy())  # padding cells are outside every object
    return t.to(device)


def restore(preview: np.ndarray, semantics, settings, seed: int, stages: int | None = None,
            device: str | None = None, progress=None, backbone=None, on_step=None, on_image=None) -> np.ndarray:
    """Restore the decoded reference `preview` (uint8 (H, W, 3)) with the file's semantics.

    stages: None = all K+1, 0 = the preview unchanged, k <= K = objects 1..k only (sequential
    schedule; the fused schedule is one pass: 0 or K+1).
    progress(stage_index, total, label) is called before each stage (1-based).
    on_step(stage_index, total, step, steps) is called after each denoising step (step 1-based).
    on_image(stages_value, image) is called after each stage with the uint8 image that a decode with
    stages=stages_value returns (one VAE decode per stage), so a client watches the stages of ONE
    decode instead of re-running stages 1..k-1 for image k; the fused schedule emits once (K+1).
    """
    preview = np.asarray(preview)
    if preview.dtype != np.uint8 or preview.ndim != 3 or preview.shape[2] != 3:
        raise InputError(f"preview must be uint8 (H, W, 3), got {preview.dtype} {preview.shape}")
    objects = list(semantics.objects)
    n_obj = len(objects)
    n_stages = n_obj + 1 if stages is None else int(stages)
    if not 0 <= n_stages <= n_obj + 1:
        raise InputError(f"stages must be between 0 and {n_obj + 1} for this file, got {stages}")
    if n_stages == 0:
        return preview.copy()
    fused = settings.schedule == "fused"
    if fused and n_stages != n_obj + 1:
        raise InputError(f"the fused schedule restores all objects in one pass: stages must be 0 or "
                         f"{n_obj + 1} for this file, got {stages}")
    orag = settings.orag
    st = settings.pipeline

    if backbone is None:
        dev = resolve_device(device)
        backbone = get_backbone(settings, dev, resolve_dtype(st.dtype, dev))
    dev = next(backbone.unet.parameters()).device
    H, W = preview.shape[:2]
    grid = (math.ceil(H / 8), math.ceil(W / 8))

    x = torch.from_numpy(np.array(preview, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0  # a copy: preview may be read-only
    xp = pad_image(x, UNET_MULTIPLE, st.pad_mode).to(dev)
    lh, lw = xp.shape[-2] // 8, xp.shape[-1] // 8
    tiled = H * W > st.max_pixels
    vae = backbone.vae
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if tiled else vae.disable_tiling()

    channels_last = st.channels_last and dev.type == "cuda"
    unet, controlnet = backbone.unet, backbone.controlnet
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        controlnet.to(memory_format=torch.channels_last)
    if st.compile != "none":
        unet, controlnet = _compiled(unet, st.compile), _compiled(controlnet, st.compile)

    n_obj_run = min(n_stages, n_obj)
    use_attn = orag.attention_on and n_obj_run > 0
    state = OragState() if use_attn else None
    if state is not None:
        state.range_mode, state.fixed_range = orag.range_mode, orag.fixed_range
    denoiser = Denoiser(backbone, unet=unet, controlnet=controlnet, state=state, batched_cfg=st.batched_cfg,
                        tile=st.tile if tiled else 0, overlap=st.tile_overlap, channels_last=channels_last)
    pixel = backbone.condition != "latent"
    installed = []
    name_in_prompt = st.object_prompt == "name+description"

    def object_prompt(obj) -> str:
        return f"{obj.name}, {obj.description}" if name_in_prompt else obj.description

    def to_image(z_now) -> torch.Tensor:
        out = backbone.decode_latent(z_now).float()[..., :H, :W]
        return color_fix(out, x.to(dev), st.color_fix)

    def emit(index, z_now) -> None:
        if on_image is not None:
            on_image(index, _to_uint8(to_image(z_now)))

    def run_stage(index, spec, z_in, steps, **kwargs):
        hook = None
        if on_step is not None:
            total = 1 if fused else n_stages
            hook = lambda i, t, t_next, z: on_step(index, total, i + 1, steps)  # noqa: E731
        return sample_stage(denoiser, backbone.scheduler_config, spec, z_in, steps=steps, callback=hook, **kwargs)

    try:
        with torch.inference_mode():
            if use_attn:
                installed.append((backbone.unet, install(backbone.unet, state, orag.unet_blocks, "unet")))
                if orag.controlnet:
                    installed.append((backbone.controlnet, install(backbone.controlnet, state, label="controlnet")))
            z_ref = backbone.encode_image(xp).float()
            uncond = backbone.encode_prompt([settings.negative_prompt])

            def spec_for(prompt_emb, cfg, z_cond, image_cond, mask=None, tokens=None, negative=uncond):
                if pixel and image_cond is None:
                    image_cond = backbone.decode_latent(z_cond).float()  # pixel ControlNets need the image
                control = backbone.control_condition(image_cond, z_cond)
                return StageSpec(cond=prompt_emb, uncond=negative if cfg != 1.0 else None, cfg=cfg,
                                 control=control, control_factor=8 if pixel else 1,
                                 orag_mask=None if mask is None else mask.float(), orag_tokens=tokens)

            def final_start(z_last, image_last):
                if st.final_start != "low-frequency":
                    return st.final_start
                # DiffBIR's "better start": the low band of the image, in [-1, 1] (the authors'
                # code passed 0..255 pixels to the VAE here)
                if image_last is None:
                    image_last = backbone.decode_latent(z_last).float()
                return backbone.encode_image(_low_high(image_last.float())[0]).float()

            if fused:
                if progress is not None:
                    progress(1, 1, f"fused: {n_obj} object{'s' if n_obj != 1 else ''} + overall")
                live = [(obj, m) for obj, m in ((o, _object_mask(o, lh, lw, grid, dev)) for o in objects)
                        if m.any()]  # an object with no cell on the latent grid adds nothing
                embs = backbone.encode_prompt([semantics.overall] + [object_prompt(o) for o, _ in live])
                cond = fused_context(embs)
                negative = fused_context(uncond.expand(len(live) + 1, -1, -1))
                masks = tokens = None
                if use_attn and live:
                    masks = torch.cat([m for _, m in live], dim=1)
                    tokens = fused_token_matrix([object_token_mask(backbone.tokenizer, o.name, o.description, orag,
                                                                   name_in_prompt=name_in_prompt)
                                                 for o, _ in live])
                spec = spec_for(cond, settings.final_cfg, z_ref, xp, masks, tokens, negative=negative)
                z = run_stage(1, spec, z_ref, settings.final_steps, start_strength=st.final_start_strength,
                              generator=stage_generator(seed, n_obj + 1), orag=orag, start=final_start(z_ref, xp))
            else:
                z = z_ref
                image = xp  # the pixels of z where known without a decode (stage 0)
                for k, obj in enumerate(objects[:n_obj_run], start=1):
                    if progress is not None:
                        progress(k, n_stages, f"object {k}/{n_obj}: {obj.name}")
                    mask = _object_mask(obj, lh, lw, grid, dev)
                    if not mask.any():
                        if k < n_stages:  # nothing of the object survives on the latent grid: a no-op stage
                            emit(k, z)
                        continue
                    tokens = (object_token_mask(backbone.tokenizer, obj.name, obj.description, orag,
                                                name_in_prompt=name_in_prompt) if use_attn else None)
                    emb = backbone.encode_prompt([object_prompt(obj)])
                    spec = spec_for(emb, settings.object_cfg, z, image, mask if use_attn else None, tokens)
                    z = run_stage(k, spec, z, settings.object_steps_for(k),
                                  start_strength=st.object_start_strength, generator=stage_generator(seed, k),
                                  orag=orag, blend_mask=mask if orag.blend_on else None, start=st.object_start,
                                  blend_every_step=orag.blend_every_step)
                    image = None
                    if k < n_stages:  # the last stage run is emitted below, from the decode that returns
                        emit(k, z)
                if n_stages == n_obj + 1:
                    if progress is not None:
                        progress(n_stages, n_stages, "overall")
                    emb = backbone.encode_prompt([semantics.overall])
                    if st.final_condition == "reference":
                        spec = spec_for(emb, settings.final_cfg, z_ref, xp)
                    else:
                        spec = spec_for(emb, settings.final_cfg, z, image)
                    z = run_stage(n_stages, spec, z, settings.final_steps, start_strength=st.final_start_strength,
                                  generator=stage_generator(seed, n_obj + 1), start=final_start(z, image))
            result = _to_uint8(to_image(z))
    finally:
        for model, originals in installed:
            uninstall(model, originals)
    if on_image is not None:
        on_image(n_stages, result)
    return result


def _to_uint8(out: torch.Tensor) -> np.ndarray:
    out = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out[0].permute(1, 2, 0).cpu().numpy()


def fused_context(embs: torch.Tensor) -> torch.Tensor:
    """(K+1, 77, D) prompt embeddings -> (1, 77 + 76 K, D): the first prompt whole, then every
    other prompt without its BOS.

    CLIP's text encoder is causal, so the hidden state at BOS is the same for every prompt: K more
    copies would only add log(K+1) to the logit of the attention sink. One BOS is kept.
    """
    if embs.shape[0] == 1:
        return embs
    return torch.cat([embs[:1], embs[1:, 1:].reshape(1, -1, embs.shape[-1])], dim=1)


def fused_token_matrix(token_masks: list[torch.Tensor]) -> torch.Tensor:
    """Per-object (77,) token masks -> (K, 77 + 76 K) float: object k's tokens at their place in
    `fused_context` (segment k starts at 77 + 76 (k-1); its BOS, never an object token, is dropped)."""
    n = len(token_masks)
    length = token_masks[0].shape[0]
    out = torch.zeros(n, length + (length - 1) * n)
    for k, m in enumerate(token_masks):
        offset = length + (length - 1) * k
        out[k, offset:offset + length - 1] = m[1:].float()
    return out
