"""Backbone "sd21-ircontrolnet": Stable Diffusion 2.1-base from its diffusers repository plus
DiffBIR v2's IRControlNet, ported exactly from its released LDM checkpoint (ircontrolnet.py).
The paper's setting (profile `sedic`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...errors import ModelUnavailableError
from ...models import ModelRef
from ..models import DEFAULT_CONTROLNET_FILE, sd_pipeline
from .base import BackboneSpec

if TYPE_CHECKING:
    import torch

    from ..backbone import Backbone
    from ..settings import DecoderSettings


def models(d: DecoderSettings) -> list[ModelRef]:
    refs = [sd_pipeline("diffusion base model (decoder)", d.base_model, d.revision)] if d.base_model else []
    if d.controlnet:  # the IRControlNet: one checkpoint file
        refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "file",
                             d.controlnet_file or DEFAULT_CONTROLNET_FILE))
    return refs


def resolve_controlnet_file(settings: DecoderSettings) -> str:
    """Local path of the IRControlNet checkpoint: a file, a directory + controlnet_file, or a hub repo."""
    from ...models import hub_file

    src, fname = settings.controlnet, settings.controlnet_file or DEFAULT_CONTROLNET_FILE
    if not src:
        raise ModelUnavailableError("no control network configured (decoder.controlnet is empty)")
    src = os.path.expanduser(src)
    if os.path.isfile(src):
        return src
    missing = "does not exist; point the profile's decoder.controlnet at the checkpoint"
    if os.path.isdir(src):
        path = os.path.join(src, fname)
        if not os.path.isfile(path):
            raise ModelUnavailableError(f"control network checkpoint {path!r} {missing}")
        return path
    if src.startswith((".", "/", "~")) or src.endswith((".pth", ".ckpt", ".safetensors")):
        raise ModelUnavailableError(f"control network checkpoint {src!r} {missing}")
    return hub_file(src, fname, getattr(settings, "controlnet_revision", None),
                    what=f"control network {src}/{fname}")


def load(settings: DecoderSettings, dtype: torch.dtype) -> Backbone:
    from ..backbone import load_sd_backbone
    from ..ircontrolnet import (
        controlnet_config_from_unet,
        load_ircontrolnet_state_dict,
        make_ircontrolnet,
        read_checkpoint,
    )

    ckpt_path = resolve_controlnet_file(settings)  # first: fail fast before loading SD

    def ircontrolnet(unet):
        controlnet = make_ircontrolnet(controlnet_config_from_unet(unet.config))
        try:
            load_ircontrolnet_state_dict(controlnet, read_checkpoint(ckpt_path))
        except ValueError as exc:
            raise ModelUnavailableError(f"{ckpt_path!r} is not an IRControlNet for {settings.base_model!r}: "
                                        f"{exc}") from None
        return controlnet

    return load_sd_backbone(settings, dtype, SPEC, ircontrolnet)


SPEC = BackboneSpec(
    name="sd21-ircontrolnet",
    summary="SD 2.1-base + DiffBIR v2's IRControlNet (conditioned on the scaled VAE latent)",
    condition="latent",
    unet_levels=4,  # SD 2.1-base: block_out_channels (320, 640, 1280, 1280)
    models=models,
    load=load,
)
