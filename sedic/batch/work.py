"""The stage workers of `sedic batch`: thin calls of the Python API, one instance per process.

Each is a picklable class; `Class(options)(device)` is made once per worker process (or Ray
actor) and then called with an item's payload, returning the keys it adds. Models are loaded
(and cached) by the library on the first call, so a worker loads them once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path


@dataclass(frozen=True)
class Analyzer:
    """Image -> semantics, with the profile's analysis models."""

    profile: str | None

    def __call__(self, device: str):
        return partial(self.run, device=device)

    def run(self, payload: dict, device: str) -> dict:
        import sedic

        return {"semantics": sedic.analyze(payload["src"], profile=self.profile, device=device)}


@dataclass(frozen=True)
class Encoder:
    """Image (+ semantics from the analysis stage or a semantics folder) -> .sedic bytes."""

    bpp: float
    profile: str | None
    seed: int
    schedule: tuple  # ((key, value), ...): hashable, picklable
    semantics_dir: str | None
    best_effort: bool = False  # a target that cannot be met: the smallest file and a warning

    def __call__(self, device: str):
        return partial(self.run, device=device)

    def run(self, payload: dict, device: str) -> dict:
        import sedic

        from ..errors import InputError
        from ..imageio import load_image

        image = load_image(payload["src"])
        semantics = payload.get("semantics")
        if semantics is None and self.semantics_dir is not None:
            semantics = Path(self.semantics_dir) / f"{Path(payload['src']).stem}.json"
            if not semantics.is_file():
                raise InputError(f"no semantics for this image: {semantics} is missing")
        data = sedic.compress(image, bpp=self.bpp, semantics=semantics, analyze=False, profile=self.profile,
                              seed=self.seed, schedule=dict(self.schedule) or None,
                              best_effort=self.best_effort)
        height, width = image.shape[:2]
        return {"data": data, "pixels": width * height, "semantics": None}


@dataclass(frozen=True)
class Decoder:
    """.sedic file -> PNG bytes (encoded in the worker, so the driver only writes)."""

    profile: str | None
    stages: int | None

    def __call__(self, device: str):
        return partial(self.run, device=device)

    def run(self, payload: dict, device: str) -> dict:
        import numpy as np
        from PIL import Image

        import sedic

        from ..bitstream import read_file

        data = read_file(payload["src"])
        image = sedic.decompress(data, profile=self.profile, stages=self.stages, device=device)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, "PNG")
        info = sedic.inspect(data)
        return {"data": buf.getvalue(), "input_bytes": len(data), "bpp": info["bpp"]}
