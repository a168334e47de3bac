"""What every reference codec shares: the downscale factors, the reduced-size rule, the settings
of the search, the payload's size header, the normative upsampling, and the `ReferenceCodec`
interface a codec implements to be registered (sedic/streams/codecs/__init__.py).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

from sedic.bitstream import MAX_SIDE as MAX_FILE_SIDE, read_varint, write_varint
from sedic.errors import BitstreamError, InputError
from sedic.streams import lanczos as _lanczos

if TYPE_CHECKING:
    from sedic.config import ReferenceSettings
    from sedic.models import ModelRef

# Downscale factors; a payload stores the index (4 bits). Index 15 means "explicit
# size follows". Exact fractions so the reduced size is the same on every machine.
FACTORS: tuple[Fraction, ...] = tuple(Fraction(f) for f in
                                      ("1", "3/2", "2", "5/2", "3", "4", "5", "6", "8", "10", "12", "16"))
EXPLICIT_SIZE = 15
MIN_SIDE = 16
MAX_SIDE = 65535  # sanity limit on the original size we are asked to decode to

def reduced_size(width: int, height: int, factor_index: int) -> tuple[int, int]:
    """round-half-up(side / factor), at least MIN_SIDE, never more than the side itself."""
    f = FACTORS[factor_index]

    def side(n: int) -> int:
        r = (2 * n * f.denominator + f.numerator) // (2 * f.numerator)
        return min(n, max(MIN_SIDE, r))

    return side(width), side(height)


@dataclass(frozen=True, order=True)
class ReferenceSetting:
    """One point of the search space: downscale factor (index into FACTORS) and codec quality.

    quality is the codec's own scale: Pillow AVIF quality 0..100, CompressAI quality index."""

    factor_index: int
    quality: int

    @property
    def factor(self) -> float:
        """The downscale factor; NaN for EXPLICIT_SIZE (the refinement's explicit sizes: the
        size is in the payload)."""
        return float(FACTORS[self.factor_index]) if self.factor_index < len(FACTORS) else math.nan


# ------------------------------------------------------------ helpers


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("reference image must be a uint8 numpy array of shape (H, W, 3)")
    h, w = image.shape[:2]
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise InputError(f"image size {w}x{h} outside 1..{MAX_SIDE}")
    return np.ascontiguousarray(image)


def _check_target(width, height) -> None:
    if not all(isinstance(v, (int, np.integer)) for v in (width, height)) or not (
            1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise BitstreamError(f"reference target size {width}x{height} outside 1..{MAX_SIDE}")


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def upsample(reduced: np.ndarray, width: int, height: int) -> np.ndarray:
    """The normative upsampling rule (docs/reference-stream.md): Lanczos-3 in 22-bit fixed point,
    our own integer implementation of what Pillow's LANCZOS resize computes when enlarging."""
    return _lanczos.resize(reduced, width, height)


def _size_header(factor_index: int, rw: int, rh: int) -> bytes:
    return b"" if factor_index != EXPLICIT_SIZE else write_varint(rw - 1) + write_varint(rh - 1)


def _read_size(data: bytes, pos: int, factor_index: int, width: int, height: int) -> tuple[int, int, int]:
    if factor_index == EXPLICIT_SIZE:
        # The varints carry size - 1; the rule is on the size itself, checked before anything
        # is allocated or decoded, and the message names the size, not the varint.
        sides = []
        for name, image_side in (("width", width), ("height", height)):
            minus_one, pos = read_varint(data, pos, f"reference {name} - 1", MAX_FILE_SIDE - 1)  # 2 bytes at most
            if minus_one + 1 > image_side:
                raise BitstreamError(f"reference {name} {minus_one + 1} is above the image {name} {image_side}")
            sides.append(minus_one + 1)
        return sides[0], sides[1], pos
    if factor_index >= len(FACTORS):
        raise BitstreamError(f"unknown downscale factor index {factor_index}")
    return (*reduced_size(width, height, factor_index), pos)


# ------------------------------------------------------------ codecs


class ReferenceCodec(abc.ABC):
    """A reference codec: what the registry (sedic/streams/codecs/__init__.py) needs to know of it
    is declared here, on the class, so encode, decode, inspect and the preview find it in one place.

    `codec_id` is the top 3 bits of payload byte 0 (what the bitstream stores, never reused);
    `name` is what a profile's `reference.codec` and `make_codec` call it."""

    codec_id: ClassVar[int]
    name: ClassVar[str]

    # -------------------------------------------------------- registry hooks
    @classmethod
    def from_settings(cls, settings: ReferenceSettings) -> ReferenceCodec:
        """The encoder a profile's reference settings describe."""
        return cls()

    @classmethod
    def decode_options(cls, settings: ReferenceSettings) -> dict:
        """Options a profile adds when decoding this codec's payloads (where weights are)."""
        return {}

    @classmethod
    def for_payload(cls, payload: bytes, **options) -> ReferenceCodec:
        """A decoder for this payload: what the payload names (model, ...) plus the options that
        concern this codec (the others are ignored, so a caller may pass one set for any payload).
        Malformed fields it reads raise BitstreamError."""
        return cls()

    @classmethod
    def models(cls, settings: ReferenceSettings) -> list[ModelRef]:
        """The downloadable models an encode or decode with these settings reads."""
        return []

    # -------------------------------------------------------- coding

    def encode(self, image: np.ndarray, setting: ReferenceSetting) -> bytes:
        """Full-resolution uint8 (H, W, 3) image -> self-contained payload."""
        image = _check_image(image)
        h, w = image.shape[:2]
        self.check_setting(setting)
        return self.encode_reduced(_resize(image, *reduced_size(w, h, setting.factor_index)), setting)

    @abc.abstractmethod
    def check_setting(self, setting: ReferenceSetting) -> None:
        """InputError for a setting outside the codec's range."""

    @abc.abstractmethod
    def encode_reduced(self, reduced: np.ndarray, setting: ReferenceSetting) -> bytes:
        """The image already downscaled to the setting's reduced size -> payload."""

    @abc.abstractmethod
    def parse(self, payload: bytes, width: int, height: int) -> tuple:
        """Every rule of the payload that needs no decoding (inspect applies it too): BitstreamError."""

    @abc.abstractmethod
    def describe(self, payload: bytes, width: int, height: int) -> dict:
        """What `sedic inspect` shows of the payload: {"codec": name, "width", "height" (the coded,
        reduced size), and the codec's own fields}; parses it, so the same rules apply."""

    @abc.abstractmethod
    def decode_reduced(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> uint8 image at its coded (reduced) size; (width, height) is the original."""

    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> uint8 (height, width, 3), upsampled to full size by the normative rule."""
        return upsample(self.decode_reduced(payload, width, height), width, height)

    @abc.abstractmethod
    def qualities(self) -> list[int]:
        """Quality values, ascending in rate."""

    def settings(self, width: int, height: int) -> list[ReferenceSetting]:
        """Factors (ascending) x qualities (ascending); factors giving a size already listed are dropped."""
        seen: set[tuple[int, int]] = set()
        out: list[ReferenceSetting] = []
        for i in range(len(FACTORS)):
            size = reduced_size(width, height, i)
            if size in seen:
                continue
            seen.add(size)
            out.extend(ReferenceSetting(i, q) for q in self.qualities())
        return out


