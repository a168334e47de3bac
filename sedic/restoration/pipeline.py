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

from ..devices import resolve_device, resolve_dtype
from ..errors import InputError
from .orag import OragState, install, object_token_mask, uninstall
from .plan import object_prompt, plan_stages
from .sampler import Denoiser, StageSpec, sample_stage

_BACKBONE_CACHE: dict = {}
_COMPILED: dict = {}


def get_backbone(settings, device: str | torch.device, dtype: torch.dtype):
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
    schedule; the fused schedule is one pass: 0 or K+1). The stages run are `plan_stages(...)`.
    progress(stage_index, total, label) is called before each stage (1-based).
    on_step(stage_index, total, step, steps) is called after each denoising step (step 1-based).
    on_image(stages_value, image) is called after each stage with the uint8 image that a decode with
    stages=stages_value returns (one VAE decode per stage), so a client watches the stages of ONE
    decode instead of re-running stages 1..k-1 for image k; the fused schedule emits once (K+1).
    """
    preview = np.asarray(preview)
    if preview.dtype != np.uint8 or preview.ndim != 3 or preview.shape[2] != 3:
        raise InputError(f"preview must be uint8 (H, W, 3), got {preview.dtype} {preview.shape}")
    plan = plan_stages(semantics, settings, stages)
    if not plan:
        return preview.copy()
    if backbone is None:
        dev = resolve_device(device)
        backbone = get_backbone(settings, dev, resolve_dtype(settings.pipeline.dtype, dev))
    decode = _Decode(preview, semantics, settings, seed, backbone, on_step)
    try:
        with torch.inference_mode():
            decode.install_orag(plan)
            z, image = decode.z_ref, decode.xp  # image: the pixels of z where known without a decode
            for stage in plan:
                if progress is not None:
                    progress(stage.index, stage.total, stage.label)
                z, image = decode.run(stage, z, image)
                if on_image is not None and stage is not plan[-1]:
                    on_image(stage.stages, _to_uint8(decode.to_image(z)))
            result = _to_uint8(decode.to_image(z))
    finally:
        decode.uninstall_orag()
    if on_image is not None:
        on_image(plan[-1].stages, result)
    return result


class _Decode:
    """The state of one restore(): the padded reference, its latent, the networks, the ORAG state;
    `run` executes one StagePlan record."""

    def __init__(self, preview, semantics, settings, seed, backbone, on_step):
        st = settings.pipeline
        self.semantics, self.settings, self.seed, self.bb, self.on_step = semantics, settings, seed, backbone, on_step
        self.objects = list(semantics.objects)
        dev = next(backbone.unet.parameters()).device
        self.dev = dev
        self.H, self.W = preview.shape[:2]
        f = backbone.vae_factor  # the backbone's description (backbones/): VAE factor, padding, levels
        self.grid = (math.ceil(self.H / f), math.ceil(self.W / f))
        # [-1, 1] RGB; a copy: preview may be read-only
        self.x = torch.from_numpy(np.array(preview, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
        self.xp = pad_image(self.x, backbone.pad_multiple, st.pad_mode).to(dev)
        self.lh, self.lw = self.xp.shape[-2] // f, self.xp.shape[-1] // f
        tiled = self.H * self.W > st.max_pixels
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
        self.state = None
        self.denoiser_args = dict(unet=unet, controlnet=controlnet, batched_cfg=st.batched_cfg,
                                  tile=st.tile if tiled else 0, overlap=st.tile_overlap, channels_last=channels_last)
        self.denoiser = Denoiser(backbone, state=None, **self.denoiser_args)
        self.pixel = backbone.condition != "latent"
        self.control_factor = f if self.pixel else 1  # control pixels per latent cell
        self.installed = []
        self.z_ref = backbone.encode_image(self.xp).float()
        self.uncond = backbone.encode_prompt([settings.negative_prompt])

    # -- ORAG processors ----------------------------------------------------------------------

    def install_orag(self, plan) -> None:
        orag = self.settings.orag
        fused = plan[0].kind == "fused"
        if not (any(s.guided for s in plan) or (fused and plan[0].objects)):
            return
        self.state = state = OragState(self.bb.levels)
        state.range_mode, state.fixed_range = orag.range_mode, orag.fixed_range
        self.denoiser = Denoiser(self.bb, state=state, **self.denoiser_args)
        bb = self.bb
        self.installed.append((bb.unet, install(bb.unet, state, orag.unet_blocks, "unet", route_all=fused)))
        if orag.controlnet or fused:
            self.installed.append((bb.controlnet, install(bb.controlnet, state, None if orag.controlnet else (),
                                                          "controlnet", route_all=fused)))

    def uninstall_orag(self) -> None:
        for model, originals in self.installed:
            uninstall(model, originals)
        self.installed = []

    # -- pieces of a stage --------------------------------------------------------------------

    def mask(self, i: int) -> torch.Tensor:
        return _object_mask(self.objects[i], self.lh, self.lw, self.grid, self.dev)

    def token_mask(self, i: int) -> torch.Tensor:
        o = self.objects[i]
        return object_token_mask(self.bb.tokenizer, o.name, o.description, self.settings.orag,
                                 name_in_prompt=self.settings.pipeline.object_prompt == "name+description")

    def to_image(self, z) -> torch.Tensor:
        out = self.bb.decode_latent(z).float()[..., :self.H, :self.W]
        return color_fix(out, self.x.to(self.dev), self.settings.pipeline.color_fix)

    def control(self, stage, z, image) -> torch.Tensor:
        z_cond, image_cond = (self.z_ref, self.xp) if stage.condition == "reference" else (z, image)
        if self.pixel and image_cond is None:
            image_cond = self.bb.decode_latent(z_cond).float()  # pixel ControlNets need the image
        return self.bb.control_condition(image_cond, z_cond)

    def start(self, stage, z, image):
        if stage.start != "low-frequency":
            return stage.start
        # DiffBIR's "better start": the low band of the image, in [-1, 1] (the authors' code passed
        # 0..255 pixels to the VAE here)
        if image is None:
            image = self.bb.decode_latent(z).float()
        return self.bb.encode_image(_low_high(image.float())[0]).float()

    def sample(self, stage, spec, z, start, blend_mask=None):
        hook = None
        if self.on_step is not None:
            hook = lambda i, t, t_next, zz: self.on_step(stage.index, stage.total, i + 1, stage.steps)  # noqa: E731
        return sample_stage(self.denoiser, self.bb.scheduler_config, spec, z, steps=stage.steps,
                            start_strength=stage.start_strength, generator=stage_generator(self.seed, stage.generator),
                            orag=self.settings.orag, blend_mask=blend_mask, callback=hook, start=start,
                            blend_every_step=stage.blend != "end")

    # -- one stage ----------------------------------------------------------------------------

    def run(self, stage, z, image):
        """(latent, pixels or None) after `stage`, from the stage input (z, its pixels or None)."""
        cfg_uncond = None if stage.cfg == 1.0 else self.uncond
        if stage.kind == "object":
            if stage.empty:  # nothing of the object survives on the latent grid: a no-op stage
                return z, image
            i = stage.objects[0]
            mask = self.mask(i)
            spec = StageSpec(cond=self.bb.encode_prompt([stage.prompt]), uncond=cfg_uncond, cfg=stage.cfg,
                             control=self.control(stage, z, image), control_factor=self.control_factor,
                             orag_mask=mask.float() if stage.guided else None,
                             orag_tokens=self.token_mask(i) if stage.guided else None)
            return self.sample(stage, spec, z, stage.start, blend_mask=mask if stage.blend != "none" else None), None
        if stage.kind == "final":
            spec = StageSpec(cond=self.bb.encode_prompt([stage.prompt]), uncond=cfg_uncond, cfg=stage.cfg,
                             control=self.control(stage, z, image), control_factor=self.control_factor)
            return self.sample(stage, spec, z, self.start(stage, z, image)), None
        spec = self.fused_spec(stage, cfg_uncond)
        return self.sample(stage, spec, self.z_ref, self.start(stage, self.z_ref, self.xp)), None

    def fused_spec(self, stage, uncond) -> StageSpec:
        """Regional prompting: the overall prompt's 77 states, then each live object's own tokens;
        their routing (visible only inside their masks, and only in the conditional row) is the ORAG
        state's (docs/orag.md, "Fused schedule")."""
        overall = self.bb.encode_prompt([stage.prompt])
        control = self.control(stage, self.z_ref, self.xp)
        if not stage.objects:
            return StageSpec(cond=overall, uncond=uncond, cfg=stage.cfg, control=control,
                             control_factor=self.control_factor)
        objs = [self.objects[i] for i in stage.objects]
        embs = self.bb.encode_prompt([object_prompt(o, self.settings) for o in objs])
        cond, tokens = fused_context(overall, embs, [self.token_mask(i) for i in stage.objects])
        masks = torch.cat([self.mask(i) for i in stage.objects], dim=1).float()
        if uncond is not None:  # same length; its object columns are never visible (row 0)
            uncond = torch.cat([uncond, cond[:, overall.shape[1]:]], dim=1)
        return StageSpec(cond=cond, uncond=uncond, cfg=stage.cfg, control=control,
                         control_factor=self.control_factor, orag_mask=masks, orag_tokens=tokens)


def _to_uint8(out: torch.Tensor) -> np.ndarray:
    out = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out[0].permute(1, 2, 0).cpu().numpy()


def fused_context(overall: torch.Tensor, object_embs: torch.Tensor,
                  token_masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused pass's context and its token matrix.

    overall (1, 77, D), object_embs (K, 77, D), token_masks K x (77,) bool (object_token_mask) ->
    context (1, 77 + sum |T_k|, D): the overall prompt whole, then each object's own token states
    (its BOS, which CLIP makes the same for every prompt, and its padding are dropped), and tokens
    (K, 77 + sum |T_k|) float: row k marks object k's columns.
    """
    parts = [overall] + [object_embs[k:k + 1, m.to(object_embs.device)] for k, m in enumerate(token_masks)]
    context = torch.cat(parts, dim=1)
    tokens = torch.zeros(len(token_masks), context.shape[1])
    offset = overall.shape[1]
    for k, m in enumerate(token_masks):
        n = int(m.sum())
        tokens[k, offset:offset + n] = 1.0
        offset += n
    return context, tokens
