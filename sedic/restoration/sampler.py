"""One restoration stage: ancestral DDPM sampling of a ControlNet-conditioned SD UNet.

The latent lives in float32 (scheduler arithmetic, blending); the networks run in the backbone's
dtype. Classifier-free guidance batches the unconditional and conditional rows into one network
call by default. Above a size the latent is processed in overlapping tiles whose noise predictions
are blended with per-pixel weights at every step (MultiDiffusion), so network activations depend on
the tile size (the ORAG bias also on the context length, docs/orag.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler

from ..errors import InputError
from .orag import OragState
from .settings import OragSettings


def spaced_timesteps(steps: int, start_strength: float, num_train_timesteps: int = 1000) -> list[int]:
    """`steps` distinct timesteps evenly spaced from t_0 = round(start_strength*(T-1)) down to 0,
    descending; one step runs at t_0 (the stage's top, predicting x_0 from there).

    Like DiffBIR's spaced DDPM (which includes T-1 and 0); start_strength < 1 starts from a partly
    noised input (img2img) while still running exactly `steps` network evaluations. More steps
    than the t_0 + 1 timesteps in [0, t_0] are refused (InputError), not silently merged.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"a stage needs at least one step, got {steps!r}")
    if not 0.0 < start_strength <= 1.0:
        raise InputError(f"start strength must be in (0, 1], got {start_strength}")
    top = int(round(start_strength * (num_train_timesteps - 1)))
    if steps > top + 1:
        raise InputError(f"{steps} steps from start strength {start_strength:g} (t_0 = {top}): at most {top + 1} "
                         f"distinct timesteps; use fewer steps or a higher start strength")
    if steps == 1:
        return [top]
    ts = np.linspace(0.0, top, steps).round().astype(np.int64)[::-1]
    return [int(t) for t in ts]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of `tile` overlapping by >= `overlap` (multiples of 8)."""
    if size <= tile:
        return [0]
    stride = max(8, (tile - overlap) // 8 * 8)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def tile_weight(th: int, tw: int, y0: int, x0: int, h: int, w: int, overlap: int) -> torch.Tensor:
    """Blend weight of a tile: linear ramps over the overlap on sides that border another tile."""
    def ramp(n, lo_inner, hi_inner):
        r = torch.ones(n)
        k = max(1, min(overlap, n // 2))
        up = torch.arange(1, k + 1, dtype=torch.float32) / (k + 1)
        if lo_inner:
            r[:k] = torch.minimum(r[:k], up)
        if hi_inner:
            r[-k:] = torch.minimum(r[-k:], up.flip(0))
        return r
    wy = ramp(th, y0 > 0, y0 + th < h)
    wx = ramp(tw, x0 > 0, x0 + tw < w)
    return (wy[:, None] * wx[None, :])[None, None]


@dataclass
class StageSpec:
    """The conditioning of one stage (full-size tensors; the denoiser crops them per tile)."""
    cond: torch.Tensor                  # (1, S, D) prompt embedding
    uncond: torch.Tensor | None         # (1, S, D) negative prompt embedding, None = no CFG
    cfg: float
    control: torch.Tensor               # controlnet_cond at full size
    control_factor: int = 1             # control pixels per latent cell (1 latent, 8 pixel)
    # One object (sequential schedule): mask (1, 1, h, w) float at the latent grid, tokens (S,) bool.
    # K objects at once (fused schedule): masks (1, K, h, w), tokens (K, S) with disjoint rows.
    orag_mask: torch.Tensor | None = None
    orag_tokens: torch.Tensor | None = None


class Denoiser:
    """Predicts the CFG-combined noise for a latent, tiled when the latent exceeds the tile size."""

    def __init__(self, backbone, unet=None, controlnet=None, state: OragState | None = None,
                 batched_cfg: bool = True, tile: int = 0, overlap: int = 16, channels_last: bool = False):
        self.backbone = backbone
        self.unet = unet if unet is not None else backbone.unet
        self.controlnet = controlnet if controlnet is not None else backbone.controlnet
        self.state = state
        self.batched_cfg = batched_cfg
        self.tile = tile            # 0 = never tile
        self.overlap = overlap
        self.channels_last = channels_last
        p = next(backbone.unet.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.evaluations = 0        # network calls x batch rows, for the benchmark

    def __call__(self, z: torch.Tensor, t: int, spec: StageSpec) -> torch.Tensor:
        h, w = z.shape[-2:]
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._predict(z, t, spec, spec.control, spec.orag_mask)
        th, tw = min(self.tile, h), min(self.tile, w)
        acc = torch.zeros_like(z)
        wsum = torch.zeros((1, 1, h, w), device=z.device, dtype=z.dtype)
        f = spec.control_factor
        for y0 in tile_starts(h, th, self.overlap):
            for x0 in tile_starts(w, tw, self.overlap):
                sl = (..., slice(y0, y0 + th), slice(x0, x0 + tw))
                ctrl = spec.control[..., y0 * f:(y0 + th) * f, x0 * f:(x0 + tw) * f]
                mask = spec.orag_mask[sl] if spec.orag_mask is not None else None
                eps = self._predict(z[sl], t, spec, ctrl, mask)
                wt = tile_weight(th, tw, y0, x0, h, w, self.overlap).to(z.device, z.dtype)
                acc[sl] += eps * wt
                wsum[sl] += wt
        return acc / wsum

    def _predict(self, z, t, spec, control, mask):
        st = self.state
        if st is not None and spec.orag_tokens is not None and spec.orag_tokens.dim() == 2:
            # fused: the (queries x keys) gates of all objects, on the device once per call
            st.tokens = None
            st.set_mask(None)
            st.set_regions(None if mask is None else mask.to(self.device), spec.orag_tokens, self.dtype)
        elif st is not None:
            # on the device once per call, not once per attention layer
            st.tokens = spec.orag_tokens.to(self.device, self.dtype) if spec.orag_tokens is not None else None
            st.set_mask(None if mask is None else mask.to(self.device), self.dtype)
            st.set_regions(None, None)
        x = z.to(self.dtype)
        control = control.to(self.dtype)
        if spec.uncond is None or spec.cfg == 1.0:
            return self._net(x, t, spec.cond, control, [1.0]).float()
        if self.batched_cfg:
            # one call for both branches: row 0 unconditional (unguided), row 1 conditional
            eps = self._net(torch.cat([x, x]), t, torch.cat([spec.uncond, spec.cond]),
                            torch.cat([control, control]), [0.0, 1.0]).float()
            eps_u, eps_c = eps.chunk(2)
        else:
            eps_u = self._net(x, t, spec.uncond, control, [0.0]).float()
            eps_c = self._net(x, t, spec.cond, control, [1.0]).float()
        return eps_u + spec.cfg * (eps_c - eps_u)

    def _net(self, x, t, emb, control, rows):
        if self.state is not None:
            self.state.rows = torch.tensor(rows, device=x.device, dtype=x.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        emb = emb.to(self.dtype)
        down, mid = self.controlnet(x, tt, encoder_hidden_states=emb, controlnet_cond=control,
                                    conditioning_scale=self.backbone.control_scale, return_dict=False)
        eps = self.unet(x, tt, encoder_hidden_states=emb, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        self.evaluations += x.shape[0]
        return eps


StepCallback = Callable[[int, int, "int | None", torch.Tensor], None]


def sample_stage(denoiser: Denoiser, scheduler_config: dict, spec: StageSpec, z_input: torch.Tensor, *,
                 steps: int, start_strength: float, generator: torch.Generator,
                 orag: OragSettings | None = None, blend_mask: torch.Tensor | None = None,
                 callback: StepCallback | None = None, start: str | torch.Tensor = "input",
                 blend_every_step: bool = True) -> torch.Tensor:
    """Run one stage from `z_input` (the stage input latent, float32) and return the new latent.

    orag: weights of the attention guidance (used when spec.orag_tokens is set).
    blend_mask: bool (1, 1, h, w); outside it the latent is the re-noised stage input after every
    step (or only after the last with blend_every_step=False), and exactly the stage input at the end.
    start: what is noised to the first timestep: "input" (z_input), "noise" (pure noise, start
    strength 1 only) or a latent.
    callback(i, t, t_next, latent) after each step (t_next None after the last).
    """
    scheduler = DDPMScheduler.from_config(scheduler_config)
    timesteps = spaced_timesteps(steps, start_strength, scheduler.config.num_train_timesteps)
    scheduler.set_timesteps(timesteps=timesteps)
    z0 = z_input.float()
    # noise drawn on the CPU from the stage's generator: the same numbers on every device
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device)
    if isinstance(start, str) and start == "noise":
        if start_strength != 1.0:
            raise ValueError("a pure-noise start needs start strength 1")
        z = noise.clone()
    elif isinstance(start, str):
        if start != "input":
            raise ValueError(f"unknown start {start!r}")
        z = scheduler.add_noise(z0, noise, torch.tensor([timesteps[0]]))
    else:
        z = scheduler.add_noise(start.float().to(z0.device), noise, torch.tensor([timesteps[0]]))
    guided = orag is not None and spec.orag_tokens is not None and orag.attention_on
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        if denoiser.state is not None:
            denoiser.state.set_weight(orag.step_weight(i, n) if guided and orag is not None else 0.0, denoiser.device)
        eps = denoiser(z, t, spec)
        # the generator is a CPU one; diffusers draws the variance noise on it and moves it
        z = scheduler.step(eps, t, z, generator=generator).prev_sample
        t_next = timesteps[i + 1] if i + 1 < n else None
        if blend_mask is not None and (blend_every_step or t_next is None):
            keep = z0 if t_next is None else scheduler.add_noise(z0, noise, torch.tensor([t_next]))
            z = torch.where(blend_mask, z, keep)
        if callback is not None:
            callback(i, t, t_next, z)
    if denoiser.state is not None:
        denoiser.state.clear()
    return z
