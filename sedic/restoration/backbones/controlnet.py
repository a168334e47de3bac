"""Backbone "controlnet": any diffusers Stable Diffusion 1.x/2.x base with any diffusers
`ControlNetModel` conditioned on the image in [0, 1] (e.g. SD 1.5 + tile, profile `sd15-tile`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...models import ModelRef
from ..models import sd_pipeline
from .base import BackboneSpec

if TYPE_CHECKING:
    import torch

    from ..backbone import Backbone
    from ..settings import DecoderSettings


def models(d: DecoderSettings) -> list[ModelRef]:
    refs = [sd_pipeline("diffusion base model (decoder)", d.base_model, d.revision)] if d.base_model else []
    if d.controlnet:  # a diffusers ControlNetModel repository
        refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "diffusers-model"))
    return refs


def load(settings: DecoderSettings, dtype: torch.dtype) -> Backbone:
    from diffusers import ControlNetModel

    from ..backbone import from_pretrained, load_sd_backbone

    def controlnet(unet):
        return from_pretrained(ControlNetModel, os.path.expanduser(settings.controlnet), "ControlNet",
                               torch_dtype=dtype, revision=getattr(settings, "controlnet_revision", None))

    return load_sd_backbone(settings, dtype, SPEC, controlnet)


SPEC = BackboneSpec(
    name="controlnet",
    summary="a diffusers SD 1.x/2.x base + a diffusers ControlNetModel conditioned on the image",
    condition="pixel",
    unet_levels=4,  # SD 1.x and 2.x: block_out_channels (320, 640, 1280, 1280)
    models=models,
    load=load,
)
