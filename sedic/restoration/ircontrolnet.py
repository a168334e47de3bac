"""DiffBIR v2's IRControlNet as a diffusers `ControlNetModel` (an exact port).

DiffBIR's control network (diffbir/model/controlnet.py) is the UNet encoder of Stable Diffusion
with one change: its first convolution `input_blocks.0.0` reads the noisy latent x concatenated
with the condition latent c (the scaled VAE latent of the image being restored), 4 + 4 = 8
channels; there is no `input_hint_block`. Its outputs are 13 zero-convolution residuals (12 from
the encoder blocks, 1 from the middle block), added to the UNet's skip connections and middle.

A convolution over a channel concatenation splits exactly along its input channels:

    conv([x, c]; W, b) = conv(x; W[:, :4], b) + conv(c; W[:, 4:], 0)

diffusers' ControlNetModel computes `conv_in(sample) + controlnet_cond_embedding(controlnet_cond)`
before its down blocks, so a ControlNetModel whose `conv_in` holds W[:, :4] (with the bias) and
whose condition embedding is one bias-free 3x3 convolution holding W[:, 4:] (no down-sampling, no
activation) computes the same function. Everything after the first layer is the stock diffusers
SD encoder; the LDM -> diffusers key renaming is diffusers' own `convert_controlnet_checkpoint`,
which we check consumed every checkpoint tensor exactly once.

The ported model is not a stock ControlNetModel: `save_pretrained` output would not reload into
one (its condition embedding differs). We always port from the released checkpoint instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelUnavailableError

# Channels of SD's latent space: the noisy latent and the condition latent both have 4.
LATENT_CHANNELS = 4


class LatentConditionEmbedding(nn.Module):
    """Replaces ControlNetModel.controlnet_cond_embedding: the condition half of the first conv."""

    def __init__(self, conditioning_channels: int, out_channels: int):
        super().__init__()
        # No bias: the original conv's bias is carried once, by conv_in.
        self.conv_in = nn.Conv2d(conditioning_channels, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        return self.conv_in(conditioning)


def make_ircontrolnet(config: dict):
    """A ControlNetModel with the given diffusers config and a latent (single conv) condition embedding."""
    from diffusers import ControlNetModel

    config = dict(config)
    config["conditioning_channels"] = LATENT_CHANNELS
    # The stock pixel embedding is built then discarded; keep it minimal.
    config["conditioning_embedding_out_channels"] = (config["block_out_channels"][0],)
    model = ControlNetModel(**config)
    model.controlnet_cond_embedding = LatentConditionEmbedding(LATENT_CHANNELS, config["block_out_channels"][0])
    return model


def controlnet_config_from_unet(unet_config) -> dict:
    """diffusers ControlNetModel kwargs mirroring a UNet2DConditionModel config (as ControlNetModel.from_unet)."""
    keys = (
        "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
        "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
        "norm_num_groups", "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
        "attention_head_dim", "num_attention_heads", "use_linear_projection", "class_embed_type",
        "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
        "projection_class_embeddings_input_dim", "mid_block_type", "encoder_hid_dim", "encoder_hid_dim_type",
        "addition_embed_type", "addition_time_embed_dim",
    )
    return {k: unet_config[k] for k in keys if k in unet_config}


def ircontrolnet_from_unet(unet):
    """An (unloaded) IRControlNet matching a UNet's architecture, as DiffBIR builds it from SD's UNet."""
    return make_ircontrolnet(controlnet_config_from_unet(unet.config))


# --------------------------------------------------------------------------------------------
# Checkpoint conversion


def _strip_wrappers(state_dict: dict) -> dict:
    # DiffBIR saves the bare ControlNet state dict; accept Lightning/LDM wrappings too.
    for wrapper in ("state_dict", "model", "params"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict) and "time_embed.0.weight" not in state_dict:
            state_dict = state_dict[wrapper]
    # DataParallel/DDP training saves every key under "module." (a re-saved DiffBIR checkpoint).
    if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    if any(k.startswith("control_model.") for k in state_dict):
        state_dict = {k[len("control_model."):]: v for k, v in state_dict.items() if k.startswith("control_model.")}
    return state_dict


def convert_ircontrolnet_checkpoint(state_dict: dict, config: dict) -> dict:
    """LDM-layout IRControlNet state dict -> state dict of `make_ircontrolnet(config)`.

    Raises ValueError when the checkpoint is not an IRControlNet of this architecture.
    """
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    sd = _strip_wrappers(state_dict)
    if "input_blocks.0.0.weight" not in sd or "time_embed.0.weight" not in sd:
        raise ValueError("not an LDM-layout ControlNet checkpoint (no input_blocks.0.0.weight / time_embed.0.weight)")
    if any(k.startswith("input_hint_block.") for k in sd):
        raise ValueError("checkpoint has an input_hint_block: a pixel-conditioned ControlNet, not an IRControlNet")
    first = sd["input_blocks.0.0.weight"]
    n_x = config.get("in_channels", LATENT_CHANNELS)
    if first.ndim != 4 or first.shape[1] != n_x + LATENT_CHANNELS:
        raise ValueError(
            f"input_blocks.0.0.weight has shape {tuple(first.shape)}; an IRControlNet needs "
            f"{n_x} + {LATENT_CHANNELS} input channels (noisy latent, condition latent)"
        )

    converted = convert_controlnet_checkpoint(sd, dict(config))

    # Account for every tensor: the converter renames without copying, so identity tells which
    # source key fed which target key. A key dropped or used twice means the layouts disagree.
    source_of = {id(v): k for k, v in sd.items()}
    missing_targets = [k for k, v in converted.items() if v is None]
    if missing_targets:
        raise ValueError(f"checkpoint lacks tensors for {sorted(missing_targets)[:5]}...")
    used = Counter(source_of.get(id(v)) for v in converted.values())
    if None in used:
        raise ValueError("converter produced tensors that are not from the checkpoint")
    unused = sorted(set(sd).difference(used))
    reused = sorted(k for k, n in used.items() if n > 1 and k is not None)
    if unused or reused:
        raise ValueError(f"key mapping is not one-to-one: unused {unused[:5]}, used twice {reused[:5]}")

    # The exact split of the concatenated-input convolution (see module docstring).
    w = converted.pop("conv_in.weight")
    converted["conv_in.weight"] = w[:, :n_x].contiguous()
    converted["controlnet_cond_embedding.conv_in.weight"] = w[:, n_x:].contiguous()
    return converted


def load_ircontrolnet_state_dict(model, state_dict: dict) -> None:
    """Port an LDM-layout IRControlNet checkpoint into `model` (from make_ircontrolnet), strictly."""
    converted = convert_ircontrolnet_checkpoint(state_dict, model.config)
    expected = model.state_dict()
    unexpected, missing = sorted(set(converted) - set(expected)), sorted(set(expected) - set(converted))
    if unexpected or missing:
        raise ValueError(f"checkpoint does not fit the architecture: unexpected {unexpected[:5]}, "
                         f"missing {missing[:5]}")
    wrong = [k for k in converted if k in expected and converted[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(f"shape mismatch for {k}: checkpoint {tuple(converted[k].shape)}, "
                         f"model {tuple(expected[k].shape)} ({len(wrong)} mismatches)")
    # strict: every model parameter is set, nothing left over.
    model.load_state_dict(converted, strict=True)


def read_checkpoint(path: str) -> dict:
    """A state dict from .pth/.ckpt (torch.load, weights only) or .safetensors."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelUnavailableError(f"control network checkpoint {path!r} does not exist") from None
    except Exception as exc:  # pickle/zip errors: a corrupt or foreign file
        raise ModelUnavailableError(f"cannot read control network checkpoint {path!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# The LDM layout, for building random checkpoints (tiny backbone, tests)


@dataclass(frozen=True)
class LdmControlNetConfig:
    """The constructor arguments of DiffBIR's ControlNet that shape its state dict."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels with a SpatialTransformer (ds in attention_resolutions)
    num_head_channels: int = 64
    context_dim: int = 1024
    in_channels: int = 4
    hint_channels: int = 4
    norm_groups: int = 32
    use_linear_in_transformer: bool = True

    def diffusers_config(self) -> dict:
        """The diffusers ControlNetModel kwargs of the same network (SD 2.x naming quirks included)."""
        chans = tuple(self.model_channels * m for m in self.channel_mult)
        return dict(
            in_channels=self.in_channels,
            down_block_types=tuple(
                "CrossAttnDownBlock2D" if i in self.attention_levels else "DownBlock2D" for i in range(len(chans))
            ),
            block_out_channels=chans,
            layers_per_block=self.num_res_blocks,
            cross_attention_dim=self.context_dim,
            # diffusers' `attention_head_dim` is the number of heads for these models (a known misnomer).
            attention_head_dim=tuple(c // self.num_head_channels for c in chans),
            use_linear_projection=self.use_linear_in_transformer,
            norm_num_groups=self.norm_groups,
            flip_sin_to_cos=True,
            freq_shift=0,
        )


def ldm_ircontrolnet_shapes(cfg: LdmControlNetConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of DiffBIR's ControlNet state dict for `cfg` (SpatialTransformer, depth 1)."""
    shapes: dict[str, tuple[int, ...]] = {}
    c0 = cfg.model_channels
    temb = 4 * c0

    def lin(name, out_f, in_f, bias=True):
        shapes[f"{name}.weight"] = (out_f, in_f)
        if bias:
            shapes[f"{name}.bias"] = (out_f,)

    def conv(name, out_c, in_c, k):
        shapes[f"{name}.weight"] = (out_c, in_c, k, k)
        shapes[f"{name}.bias"] = (out_c,)

    def norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def resblock(p, cin, cout):
        norm(f"{p}.in_layers.0", cin)
        conv(f"{p}.in_layers.2", cout, cin, 3)
        lin(f"{p}.emb_layers.1", cout, temb)
        norm(f"{p}.out_layers.0", cout)
        conv(f"{p}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{p}.skip_connection", cout, cin, 1)

    def transformer(p, c):
        inner = c  # heads * head_dim with num_head_channels, legacy=False
        norm(f"{p}.norm", c)
        if cfg.use_linear_in_transformer:
            lin(f"{p}.proj_in", inner, c)
            lin(f"{p}.proj_out", c, inner)
        else:
            conv(f"{p}.proj_in", inner, c, 1)
            conv(f"{p}.proj_out", c, inner, 1)
        b = f"{p}.transformer_blocks.0"
        for attn, kv_dim in (("attn1", inner), ("attn2", cfg.context_dim)):
            lin(f"{b}.{attn}.to_q", inner, inner, bias=False)
            lin(f"{b}.{attn}.to_k", inner, kv_dim, bias=False)
            lin(f"{b}.{attn}.to_v", inner, kv_dim, bias=False)
            lin(f"{b}.{attn}.to_out.0", inner, inner)
        lin(f"{b}.ff.net.0.proj", inner * 4 * 2, inner)  # GEGLU: value and gate
        lin(f"{b}.ff.net.2", inner, inner * 4)
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{b}.{n}", inner)

    lin("time_embed.0", temb, c0)
    lin("time_embed.2", temb, temb)
    conv("input_blocks.0.0", c0, cfg.in_channels + cfg.hint_channels, 3)
    conv("zero_convs.0.0", c0, c0, 1)
    idx, ch = 1, c0
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            out = mult * c0
            resblock(f"input_blocks.{idx}.0", ch, out)
            ch = out
            if level in cfg.attention_levels:
                transformer(f"input_blocks.{idx}.1", ch)
            conv(f"zero_convs.{idx}.0", ch, ch, 1)
            idx += 1
        if level != len(cfg.channel_mult) - 1:
            conv(f"input_blocks.{idx}.0.op", ch, ch, 3)
            conv(f"zero_convs.{idx}.0", ch, ch, 1)
            idx += 1
    resblock("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    conv("middle_block_out.0", ch, ch, 1)
    return shapes


def random_ldm_ircontrolnet_state_dict(
    cfg: LdmControlNetConfig, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random weights in the LDM layout, scaled so activations stay O(1) (zero convs too: non-trivial control)."""
    sd = {}
    for key, shape in ldm_ircontrolnet_shapes(cfg).items():
        if len(shape) == 1:
            is_norm_weight = key.endswith(".weight")
            t = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.1
            if is_norm_weight:
                t = t + 1.0
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)
        sd[key] = t.to(dtype)
    return sd
