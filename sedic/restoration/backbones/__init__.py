"""The decoder backbones: one module and one `BackboneSpec` each, registered in `BACKBONES` below.

Adding one (say an SDXL ControlNet): write `sdxl_controlnet.py` with its `models`, `load` and
`SPEC` (copy controlnet.py), add its SPEC to `BACKBONES`, a row to docs/backbones.md, and its UNet
to tests/test_backbone.py's `REAL_UNETS` (the test fails until it is there). docs/backbones.md.
"""

from __future__ import annotations

from ...errors import ModelUnavailableError
from . import controlnet, sd21_ircontrolnet, tiny
from .base import BackboneSpec

# name -> description; the order is the one messages list them in
BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    sd21_ircontrolnet.SPEC,
    controlnet.SPEC,
    tiny.SPEC,
)}


def unknown_backbone_message(name: object) -> str:
    """The one-line message for a backbone name that is not registered (DecoderSettings' check and
    `backbone_spec` both use it)."""
    return f"unknown decoder backbone {name!r} (known: {', '.join(BACKBONES)})"


def is_registered(name: object) -> bool:
    return isinstance(name, str) and name in BACKBONES


def backbone_spec(name: str) -> BackboneSpec:
    """The registered description of backbone `name`; an unknown name is a ModelUnavailableError.

    DecoderSettings already refuses an unknown name when it is made (an InputError with the same
    message); this catches settings-like objects that did not go through that check."""
    if not is_registered(name):
        raise ModelUnavailableError(unknown_backbone_message(name))
    return BACKBONES[name]


__all__ = ["BACKBONES", "BackboneSpec", "backbone_spec", "is_registered", "unknown_backbone_message"]
