"""Backbone "tiny": random weights built in-process, no files (profile `test`); a fast miniature of
the "sd21-ircontrolnet" backbone's building blocks (backbone.build_tiny_backbone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BackboneSpec

if TYPE_CHECKING:
    import torch

    from ...models import ModelRef
    from ..backbone import Backbone
    from ..settings import DecoderSettings


def models(d: DecoderSettings) -> list[ModelRef]:
    return []  # nothing to download


def load(settings: DecoderSettings, dtype: torch.dtype) -> Backbone:
    from ..backbone import build_tiny_backbone

    return build_tiny_backbone()


SPEC = BackboneSpec(
    name="tiny",
    summary="random-weight miniature of sd21-ircontrolnet, built in-process (no files)",
    condition="latent",
    unet_levels=3,  # backbone.TINY_CONTROLNET: channel_mult (1, 1, 2); other configs: build_tiny_backbone
    models=models,
    load=load,
    pad_multiple=64,  # like the SD backbone it stands in for, so profile `test` pads as `sedic` does
)
