"""The decoder's pre-trained models: UNet, ControlNet, VAE, text encoder, as one `Backbone`.

The kinds (DecoderSettings.backbone) are described and registered in `backbones/` (one module and
one `BackboneSpec` each: its models, how it loads, its networks' constants); `load_backbone` looks
the name up there. This module holds what they share: the `Backbone` record, the loading of a
diffusers Stable Diffusion repository (`load_sd_backbone`), and the tiny random backbone.

Conventions for the sampler: images are (B, 3, H, W) in [-1, 1] with H and W multiples of the
VAE's factor (8; the caller pads and crops); latents are scaled by `latent_scale`.
See docs/backbones.md.
"""

from __future__ import annotations

import gzip
import inspect
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from ..errors import ModelUnavailableError
from .backbones import backbone_spec
from .backbones.base import SD_LATENT_SCALE, BackboneSpec
from .backbones.tiny import SPEC as TINY_SPEC
from .ircontrolnet import (
    LdmControlNetConfig,
    controlnet_config_from_unet,
    load_ircontrolnet_state_dict,
    make_ircontrolnet,
    random_ldm_ircontrolnet_state_dict,
)
from .settings import DecoderSettings

if TYPE_CHECKING:  # diffusers/transformers are imported lazily (slow imports)
    import diffusers
    import transformers

# SD 1.x/2.x training schedule (the value of SD 2.1-base's scheduler/scheduler_config.json that
# DDPMScheduler uses); DiffBIR's "linear" schedule 0.00085..0.0120 in sqrt space is the same.
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}
HALF_DTYPES = (torch.float16, torch.bfloat16)  # the UNet and ControlNet only (see load_backbone)


@dataclass
class Backbone:
    unet: diffusers.UNet2DConditionModel
    controlnet: diffusers.ControlNetModel
    vae: diffusers.AutoencoderKL
    tokenizer: transformers.CLIPTokenizer
    text_encoder: transformers.CLIPTextModel
    scheduler_config: dict  # for diffusers.DDPMScheduler.from_config
    latent_scale: float
    # The backbone's description (backbones/): condition, UNet levels, VAE factor, padding.
    spec: BackboneSpec
    control_scale: float = 1.0
    name: str = field(default="")

    # -- the description's constants ------------------------------------------------------

    @property
    def condition(self) -> str:
        """"latent": controlnet_cond is the scaled VAE latent of the image being restored
        (IRControlNet); "pixel": controlnet_cond is the image in [0, 1], (B, 3, H, W)."""
        return self.spec.condition

    @property
    def levels(self) -> int:
        """The UNet's resolution levels (ORAG's mask pyramid: OragState(levels))."""
        return self.spec.unet_levels

    @property
    def vae_factor(self) -> int:
        """Image pixels per latent cell."""
        return self.spec.vae_factor

    @property
    def pad_multiple(self) -> int:
        """Images are padded (bottom/right) to a multiple of this before encoding."""
        return self.spec.pad_multiple

    # -- placement -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def modules(self):
        return (self.unet, self.controlnet, self.vae, self.text_encoder)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """Move (in place) every model; returns self."""
        for m in self.modules():
            if device is not None:
                m.to(device=device)
            if dtype is not None and next(m.parameters()).dtype != dtype:
                # nn.Module.to, not diffusers' override: that one warns about "modules to keep in
                # float32" on every dtype cast even when a model has none (ours have none).
                torch.nn.Module.to(m, dtype=dtype)
        return self

    # -- encoders --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1], H and W multiples of 8 -> (B, 4, H/8, W/8) scaled latent.

        The posterior mode (its mean), not a sample: encoding is deterministic, as in DiffBIR's
        condition path (vae_encode(sample=False)).
        """
        _check_multiple_of(image, self.vae_factor)
        vae = self.vae
        posterior = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
        return posterior.mode() * self.latent_scale

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image in [-1, 1] (not clamped: the VAE can overshoot slightly)."""
        vae = self.vae
        return vae.decode(latent.to(device=vae.device, dtype=vae.dtype) / self.latent_scale).sample

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """(B, 77, D) text conditioning: the text encoder's last_hidden_state, padded to 77 tokens.

        For SD 2.x this equals LDM/DiffBIR's "penultimate" OpenCLIP output: diffusers' converted
        SD 2 text encoder keeps 23 of OpenCLIP's 24 layers and applies the final layer norm, which
        is what FrozenOpenCLIPEmbedder(layer="penultimate") computes. Longer text is truncated to
        the 77-token window (75 content tokens).
        """
        tok = self.tokenizer
        ids = tok(
            list(prompts),
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        te = self.text_encoder
        return te(ids.to(te.device))[0]

    def control_condition(self, image: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """What to pass as `controlnet_cond`: `latent` (scaled VAE latent of `image`) for an
        IRControlNet, or `image` (given in [-1, 1]) mapped to [0, 1] for a pixel ControlNet."""
        if self.condition == "latent":
            return latent
        return ((image + 1) / 2).clamp(0, 1)

    def token_count(self, prompt: str) -> int:
        """Tokens of `prompt` without BOS/EOS (the window holds model_max_length - 2)."""
        return len(self.tokenizer(prompt, truncation=False).input_ids) - 2


def _check_multiple_of(image: torch.Tensor, factor: int) -> None:
    if image.ndim != 4 or image.shape[-1] % factor or image.shape[-2] % factor:
        raise ValueError(f"expected (B, 3, H, W) with H, W multiples of {factor} (pad first), "
                         f"got {tuple(image.shape)}")


# ==============================================================================================
# Loading


def load_backbone(
    settings: DecoderSettings,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Backbone:
    """The backbone named by `settings.backbone` (registered in backbones/), on `device` in `dtype`,
    in eval mode, gradients off."""
    bb = backbone_spec(settings.backbone).load(settings, dtype)
    _check_unet_levels(bb, settings)
    bb.control_scale = float(getattr(settings, "control_scale", 1.0))
    for m in bb.modules():
        m.eval().requires_grad_(False)
    bb.to(device, dtype)
    if dtype in HALF_DTYPES:
        # The VAE and the text encoder stay in float32 (as DiffBIR keeps them): they run once per
        # stage, and their GroupNorm/LayerNorm statistics lose detail in 16 bits.
        for m in (bb.vae, bb.text_encoder):
            torch.nn.Module.to(m, dtype=torch.float32)
    return bb


def unet_levels(unet) -> int:
    """Resolution levels a UNet module really has: its full-resolution level plus one per
    down-sampler (SD 1.x/2.x: 4)."""
    return 1 + sum(1 for block in unet.down_blocks if getattr(block, "downsamplers", None))


def _check_unet_levels(bb: Backbone, settings: DecoderSettings) -> None:
    """Refuse a base model whose UNet has another number of levels than its description says:
    ORAG's mask pyramid and the padding are built from the description (a UNet with more levels
    would fail at the first guided step, one with fewer would be guided at levels it lacks)."""
    found = unet_levels(bb.unet)
    if found != bb.spec.unet_levels:
        raise ModelUnavailableError(
            f"decoder backbone {bb.spec.name!r} needs a UNet with {bb.spec.unet_levels} resolution levels, "
            f"but the base model {settings.base_model!r} has {found}")


def from_pretrained(cls, model_id: str, what: str, revision: str | None = None, **kwargs):
    """cls.from_pretrained, the local cache first; every "not here / not reachable" error is a
    ModelUnavailableError (the caller, codec.decode, has already named the profile's models)."""
    if not model_id:
        raise ModelUnavailableError(f"no model configured for the decoder's {what}")
    from ..models import load_pretrained

    return load_pretrained(cls, model_id, revision, what=f"the decoder's {what} {model_id!r}", **kwargs)


def load_sd_backbone(settings: DecoderSettings, dtype: torch.dtype, spec: BackboneSpec, make_controlnet) -> Backbone:
    """A Backbone from the diffusers Stable Diffusion repository `settings.base_model` (UNet, VAE,
    text encoder, tokenizer, scheduler config: what restoration/models.py's SD_FOLDERS select) and
    `make_controlnet(unet)`, the backbone's own ControlNet for that UNet."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    base, rev = os.path.expanduser(settings.base_model), settings.revision  # "~/models/sd21" works too
    common = dict(revision=rev)
    unet = from_pretrained(UNet2DConditionModel, base, "UNet", subfolder="unet", torch_dtype=dtype, **common)
    full = torch.float32 if dtype in HALF_DTYPES else dtype  # loaded in float32, not up-cast from 16 bits
    vae = from_pretrained(AutoencoderKL, base, "VAE", subfolder="vae", torch_dtype=full, **common)
    text_encoder = from_pretrained(CLIPTextModel, base, "text encoder", subfolder="text_encoder",
                                   dtype=full, **common)
    tokenizer = from_pretrained(CLIPTokenizer, base, "tokenizer", subfolder="tokenizer", **common)
    return Backbone(
        # no controlnet.to(dtype): diffusers' `to` warns on every cast; load_backbone casts all models
        unet=unet, controlnet=make_controlnet(unet), vae=vae, tokenizer=tokenizer, text_encoder=text_encoder,
        scheduler_config=_scheduler_config(base, rev),
        latent_scale=float(getattr(vae.config, "scaling_factor", spec.latent_scale)), spec=spec,
        name=f"{settings.base_model} + {settings.controlnet}",
    )


def _scheduler_config(base: str, revision: str | None) -> dict:
    """The base model's training schedule, restricted to what DDPMScheduler accepts."""
    from diffusers import DDPMScheduler

    from ..models import local_first

    cfg = local_first(DDPMScheduler.load_config, base, what=f"the scheduler config of {base!r}",
                      subfolder="scheduler", revision=revision)
    accepted = set(inspect.signature(DDPMScheduler.__init__).parameters) - {"self"}
    out = {k: v for k, v in cfg.items() if k in accepted}
    out.setdefault("clip_sample", False)  # SD never clips x0; DDPMScheduler's default would
    return out


# ==============================================================================================
# Tiny random backbone (profile `test`)

# LDM-side description of the tiny IRControlNet; the tiny UNet is built to match it.
# Attention only at the coarsest level (a quarter of the latent grid): at full latent resolution a
# Kodak image's 6,144 queries make self-attention dominate the test profile's decode time.
TINY_CONTROLNET = LdmControlNetConfig(
    model_channels=32,
    channel_mult=(1, 1, 2),
    num_res_blocks=1,
    attention_levels=(2,),
    num_head_channels=16,
    context_dim=32,
)


def clip_bpe_vocabulary() -> tuple[dict[str, int], list[str]]:
    """CLIP's BPE vocabulary (the one OpenCLIP and SD use), without any download.

    Built the way CLIP's tokenizer builds it: 256 byte symbols, the same with '</w>', the
    48 894 merges, then the two special tokens: 49 408 entries.
    """
    from ..streams.text import byte_alphabet, clip_vocab_path

    with gzip.open(clip_vocab_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # line 0 is a version header
    alphabet = byte_alphabet()
    # CLIP orders the byte symbols: printable latin-1 first (in byte order), then the shifted rest
    symbols = sorted(alphabet.values(), key=ord)
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


_TOKENIZER_CACHE: dict[str, object] = {}


def tiny_tokenizer():
    """A CLIPTokenizer with CLIP's real vocabulary, built without any download (SD 2.x padding '!')."""
    from transformers import CLIPTokenizer

    if "tok" not in _TOKENIZER_CACHE:
        vocab, merges = clip_bpe_vocabulary()
        # pad "!" (id 0) like SD 2.x's tokenizer and OpenCLIP's zero padding.
        common = dict(pad_token="!", model_max_length=77)
        if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:
            # transformers 4.x: the tokenizer reads vocab.json / merges.txt files
            import json
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                vpath, mpath = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
                with open(vpath, "w", encoding="utf-8") as f:
                    json.dump(vocab, f)
                with open(mpath, "w", encoding="utf-8") as f:
                    f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
                tok = CLIPTokenizer(vocab_file=vpath, merges_file=mpath, **common)
        else:  # transformers 5: in memory
            tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], **common)
        _TOKENIZER_CACHE["tok"] = tok
    return _TOKENIZER_CACHE["tok"]


def build_tiny_backbone(seed: int = 0, controlnet_config: LdmControlNetConfig = TINY_CONTROLNET) -> Backbone:
    """Deterministic random-weight miniature of SD 2.1 + IRControlNet, on the CPU in float32.

    Same code paths as the real one: UNet with cross-attention and plain blocks, the IRControlNet
    ported from a random LDM-layout checkpoint, a VAE with factor 8, CLIP's tokenizer.
    `controlnet_config` shapes both networks (the tests build SD 2.1's full topology with it).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cn = controlnet_config
    chans = tuple(cn.model_channels * m for m in cn.channel_mult)
    down_types = cn.diffusers_config()["down_block_types"]
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=down_types,
            up_block_types=tuple(t.replace("Down", "Up") for t in reversed(down_types)),
            block_out_channels=chans,
            layers_per_block=cn.num_res_blocks,
            cross_attention_dim=cn.context_dim,
            attention_head_dim=tuple(c // cn.num_head_channels for c in chans),
            use_linear_projection=True,
            norm_num_groups=cn.norm_groups,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,  # 3 down-samplings: factor 8 like SD
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            # diffusers tiles the VAE in sample_size tiles: 64 px made a 12 MP decode run ~20 000
            # tiny tiles (~15 min); 512 px like SD's own VAE (docs/performance.md)
            sample_size=512,
            scaling_factor=SD_LATENT_SCALE,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,  # CLIP's vocabulary, so the real tokenizer's ids are valid
                hidden_size=cn.context_dim,
                intermediate_size=2 * cn.context_dim,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
                hidden_act="gelu",
                projection_dim=cn.context_dim,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=0,
            )
        )
        gen = torch.Generator().manual_seed(seed + 1)
        controlnet = make_ircontrolnet(controlnet_config_from_unet(unet.config))
        load_ircontrolnet_state_dict(controlnet, random_ldm_ircontrolnet_state_dict(cn, gen))
    # the registered description for profile `test`'s networks; other shapes have their own levels
    spec = TINY_SPEC if cn == TINY_CONTROLNET else replace(TINY_SPEC, unet_levels=len(cn.channel_mult))
    bb = Backbone(
        unet=unet, controlnet=controlnet, vae=vae, tokenizer=tiny_tokenizer(), text_encoder=text_encoder,
        scheduler_config=dict(SD_SCHEDULER_CONFIG), latent_scale=SD_LATENT_SCALE, spec=spec,
        name=f"tiny(seed={seed})",
    )
    for m in bb.modules():
        m.eval().requires_grad_(False)
    return bb
