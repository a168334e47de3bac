"""The reference codecs, and the one lookup encode, decode, inspect and the preview use.

Each codec is a `ReferenceCodec` subclass in its own module that declares, on the class, its id
(the top 3 bits of payload byte 0, as the bitstream stores it) and name (a profile's
`reference.codec`), how it is built from a profile (`from_settings`, `decode_options`), how a
decoder reads its options from a payload (`for_payload`), how the payload's header is checked
(`parse`), and its downloadable models (`models`). Adding one: a module here and its class in
`CODECS` below (plus its payload layout in docs/reference-stream.md and its tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sedic.errors import BitstreamError, InputError

from .avif import CODEC_AVIF, AvifCodec
from .base import (
    EXPLICIT_SIZE,
    FACTORS,
    MAX_SIDE,
    MIN_SIDE,
    ReferenceCodec,
    ReferenceSetting,
    reduced_size,
    upsample,
)
from .compressai import CODEC_COMPRESSAI, COMPRESSAI_MODELS, CompressAICodec, CompressAICoder

if TYPE_CHECKING:
    from sedic.config import ReferenceSettings

# The registry: one entry per codec, ids and names unique (tests/test_reference_stream.py checks).
# An id is never reused: files carry it.
CODECS: tuple[type[ReferenceCodec], ...] = (AvifCodec, CompressAICodec)

__all__ = [
    "CODECS", "CODEC_AVIF", "CODEC_COMPRESSAI", "COMPRESSAI_MODELS", "EXPLICIT_SIZE", "FACTORS", "MAX_SIDE",
    "MIN_SIDE", "AvifCodec", "CompressAICodec", "CompressAICoder", "ReferenceCodec", "ReferenceSetting",
    "check_payload", "codec_class", "decode_reference", "describe_payload", "from_settings", "make_codec",
    "payload_codec",
    "reduced_size", "upsample",
]


def codec_class(name: str) -> type[ReferenceCodec]:
    """The codec a profile or `make_codec` names (InputError for an unknown name)."""
    for cls in CODECS:
        if cls.name == name:
            return cls
    raise InputError(f"unknown reference codec {name!r} (known: {', '.join(c.name for c in CODECS)})")


def payload_codec(payload: bytes) -> type[ReferenceCodec]:
    """The codec a payload names in the top 3 bits of its first byte (BitstreamError otherwise)."""
    if not isinstance(payload, (bytes, bytearray)) or not payload:
        raise BitstreamError("empty reference payload")
    cid = payload[0] >> 5
    for cls in CODECS:
        if cls.codec_id == cid:
            return cls
    raise BitstreamError(f"unknown reference codec id {cid}")


def make_codec(name: str, **options) -> ReferenceCodec:
    """An encoder by name: "avif" (default, offline) or "compressai" (options: model, checkpoint, ...)."""
    return codec_class(name)(**options)


def from_settings(settings: ReferenceSettings) -> ReferenceCodec:
    """The encoder a profile's reference settings describe."""
    return codec_class(settings.codec).from_settings(settings)


def check_payload(payload: bytes, width: int, height: int) -> None:
    """Every rule of a reference payload that needs no decoding: codec id, reserved bits, tool
    flags, factor index, explicit size, CompressAI model and quality, string lengths.

    `sedic inspect` and `sedic decompress` both apply it, so they accept exactly the same files
    as far as the header goes (docs/bitstream.md, "Must-reject rules")."""
    payload = bytes(payload) if isinstance(payload, bytearray) else payload
    payload_codec(payload).for_payload(payload).parse(payload, width, height)


def describe_payload(payload: bytes, width: int, height: int) -> dict:
    """What the payload's header says (codec, coded size, ...), checked as check_payload checks it."""
    payload = bytes(payload) if isinstance(payload, bytearray) else payload
    return payload_codec(payload).for_payload(payload).describe(payload, width, height)


def decode_reference(payload: bytes, width: int, height: int, settings: ReferenceSettings | None = None,
                     **codec_options) -> np.ndarray:
    """Decode any reference payload; the codec comes from the top 3 bits of byte 0.

    `settings` (a profile's reference settings) adds what the codec takes from a profile when
    decoding (`decode_options`: where weights are); `codec_options` go to the payload's codec,
    options meant for another codec are ignored so a caller can pass one set for any payload."""
    check_payload(payload, width, height)
    payload = bytes(payload)
    cls = payload_codec(payload)
    if settings is not None:
        codec_options = {**cls.decode_options(settings), **codec_options}
    return cls.for_payload(payload, **codec_options).decode(payload, width, height)
