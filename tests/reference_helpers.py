"""Shared by the reference search, refinement and effort tests: a small real photo, an encoder
that encode_reference leaves unrefined, and a recorder of the AVIF encoder's real calls."""

from pathlib import Path

import numpy as np
from PIL import Image

from sedic.streams import reference as R

REPO = Path(__file__).resolve().parents[1]


def kodim23(w=240, h=160) -> np.ndarray:
    with Image.open(REPO / "examples" / "kodim23.png") as im:
        return np.asarray(im.convert("RGB").resize((w, h), Image.LANCZOS))


class SearchOnly(R.AvifCodec):
    """The same encoder; a subclass, so encode_reference leaves its result unrefined."""


def record_encodes(monkeypatch, record):
    """Every AvifCodec.encode_reduced call runs for real, then record(codec, reduced, setting,
    payload) hears of it; returns the real method."""
    real = R.AvifCodec.encode_reduced

    def spy(self, reduced, setting):
        data = real(self, reduced, setting)
        record(self, reduced, setting, data)
        return data

    monkeypatch.setattr(R.AvifCodec, "encode_reduced", spy)
    return real
