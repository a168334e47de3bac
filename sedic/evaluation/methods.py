"""The methods an evaluation compares: sedic itself, its preview (stage 0), and the baselines.

A method encodes an image at a target rate to one file and decodes that file. `file_key` names
the folder its file lives in: sedic-preview decodes sedic's own file with zero restoration stages,
so the two share one encode.
"""

from __future__ import annotations

import abc
import inspect as _inspect
from pathlib import Path

import numpy as np

from .baselines import Encoded, SearchedBaseline

SEDIC_METHODS = ("sedic", "sedic-preview")
STREAMS = ("reference", "text", "masks", "header")


class Method(abc.ABC):
    name: str
    ext: str
    file_key: str
    device: str = "cpu"

    @abc.abstractmethod
    def encode(self, image: np.ndarray, target_bpp: float, stem: str) -> Encoded:
        """The whole file at or below target_bpp (RateError when impossible)."""

    @abc.abstractmethod
    def decode(self, data: bytes, size: tuple[int, int], info: dict) -> np.ndarray:
        """uint8 (H, W, 3) at the original size."""

    def encode_config(self) -> dict:
        """Everything that changes the encoded file; a cached file made otherwise is redone."""
        return {}

    def decode_config(self) -> dict:
        """Everything that changes the decoded image (beyond the file)."""
        return {}

    def stream_bits(self, data: bytes) -> dict[str, int] | None:
        """Bits per stream where the format has streams (sedic); None for single-stream files."""
        return None

    def description(self, data: bytes) -> str | None:
        """The overall description the file carries, if any (for the CLIP score)."""
        return None


class SedicMethod(Method):
    ext = ".sedic"
    file_key = "sedic"

    def __init__(self, *, profile: str | None, semantics_dir: str | Path | None = None, analyze: bool = True,
                 device: str = "cpu", stages: int | None = None, seed: int = 0, preview: bool = False):
        self.name = "sedic-preview" if preview else "sedic"
        self.profile, self.analyze, self.device, self.seed = profile, analyze, device, seed
        self.semantics_dir = Path(semantics_dir) if semantics_dir else None
        self.stages = 0 if preview else stages

    def semantics_path(self, stem: str) -> Path | None:
        if self.semantics_dir is not None and (self.semantics_dir / f"{stem}.json").is_file():
            return self.semantics_dir / f"{stem}.json"
        return None

    def encode_config(self):
        return {"profile": self.profile, "analyze": self.analyze, "seed": self.seed,
                "semantics_dir": str(self.semantics_dir) if self.semantics_dir else None}

    def decode_config(self):
        return {"profile": self.profile, "stages": self.stages}

    def encode(self, image, target_bpp, stem):
        import sedic

        kwargs = dict(bpp=target_bpp, semantics=self.semantics_path(stem), analyze=self.analyze,
                      profile=self.profile, seed=self.seed)
        if "device" in _inspect.signature(sedic.compress).parameters:
            kwargs["device"] = self.device
        data = sedic.compress(image, **kwargs)
        sem = kwargs["semantics"]
        return Encoded(data, {"semantics": "file" if sem else ("analysis" if self.analyze else "none")})

    def decode(self, data, size, info):
        import sedic

        return sedic.decompress(data, profile=self.profile, stages=self.stages, device=self.device)

    def stream_bits(self, data):
        import sedic

        streams = sedic.inspect(data)["streams"]
        return {k: int(streams.get(k, 0)) for k in STREAMS}

    def description(self, data):
        import sedic

        return (sedic.inspect(data).get("semantics") or {}).get("overall") or None


class BaselineMethod(Method):
    def __init__(self, baseline: SearchedBaseline, device="cpu"):
        self.baseline = baseline
        self.name = baseline.name
        self.ext = baseline.ext
        self.file_key = baseline.name
        self.device = device if baseline.name.startswith("compressai-") else "cpu"

    def encode_config(self):
        codec = self.baseline.codec
        cfg = {"factors": list(self.baseline.factors), "quality": [codec.qmin, codec.qmax]}
        cfg.update({k: v for k, v in getattr(codec, "options", {}).items()})
        if hasattr(codec, "checkpoints"):
            cfg["checkpoints"] = {str(k): v for k, v in codec.checkpoints.items()}
        return cfg

    def encode(self, image, target_bpp, stem):
        return self.baseline.encode(image, target_bpp)

    def decode(self, data, size, info):
        return self.baseline.decode(data, size, info)
