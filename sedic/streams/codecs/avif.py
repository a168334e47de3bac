"""The AVIF reference codec: an AV1 still picture via Pillow's AVIF plugin (libavif / aom),
sent without its container, which sedic.streams.avif rebuilds at decode time."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sedic.config import check_effort
from sedic.errors import BitstreamError, InputError
from sedic.streams import avif as _avif

from .base import FACTORS, ReferenceCodec, ReferenceSetting, _check_target, _read_size, _size_header

CODEC_AVIF = 1


class AvifCodec(ReferenceCodec):
    """AV1 still picture via Pillow's AVIF plugin (aom encoder), sent without its container.

    Payload: byte 0 = codec id (3 bits) | seq_level_idx (5 bits);
             byte 1 = factor index (4 bits) | default-tools flag (1 bit) | 000;
             [1 byte: tool flags (6 bits) << 2, when the flag is 0];
             [varint width-1, varint height-1, when the factor index is 15];
             the AV1 frame OBU payload (rest of the payload, non-empty).
    """

    codec_id = CODEC_AVIF
    name = "avif"

    # aom tunings we accept (encoder-only; the payload does not depend on it). None leaves
    # libavif's default, which for stills with this aom is tune=iq (perceptual, deltaq on).
    TUNES = ("psnr", "ssim", "iq", None)

    # effort: what encode_reference does after the search (sedic.streams.reference_refine):
    # 0 nothing, 1 the speed-2 refinement, 2 with neighbouring sizes and pre-filtered downscales
    def __init__(self, speed: int = 6, tune: str | None = "psnr", effort: int = 2, **unknown):
        if unknown:
            raise InputError(f"unknown AVIF reference options: {sorted(unknown)}")
        if not isinstance(speed, int) or not 0 <= speed <= 10:
            raise InputError("AVIF speed must be an integer 0..10")
        if tune not in self.TUNES:
            raise InputError(f"AVIF tune must be one of {self.TUNES}")
        check_effort(effort)
        self.speed = speed
        self.tune = tune
        self.effort = effort

    @classmethod
    def from_settings(cls, settings) -> AvifCodec:
        return cls(effort=settings.effort)

    def qualities(self) -> list[int]:
        return list(range(101))

    @staticmethod
    def quantizer(quality: int) -> int:
        """The AV1 quantiser (0-63) libavif codes a quality (0-100) with; qualities that share one
        give the same payload (tests/test_reference_search.py checks it on every quality), so the
        rate search encodes each quantiser once."""
        return ((100 - int(quality)) * 63 + 50) // 100

    def encode_avif_file(self, reduced: np.ndarray, quality: int) -> bytes:
        """The whole AVIF file Pillow writes; options fixed so the container can be rebuilt."""
        buf = io.BytesIO()
        # max_threads=1: the same bytes on every machine; codec pinned to aom (the only
        # encoder we verified); 8-bit 4:2:0 full range, no ICC/EXIF/XMP. tune=psnr (aom's
        # option, passed through libavif) suits a PSNR-searched reference: +0.18 dB at
        # 0.02 bpp on 6 Kodak images vs libavif's default tune=iq (docs/reference-stream.md).
        extra = {"advanced": {"tune": self.tune}} if self.tune else {}
        Image.fromarray(reduced).save(buf, "AVIF", quality=int(quality), speed=self.speed, codec="aom",
                                      subsampling="4:2:0", range="full", max_threads=1, **extra)
        return buf.getvalue()

    def check_setting(self, setting: ReferenceSetting) -> None:
        if not 0 <= setting.factor_index < len(FACTORS) or not 0 <= setting.quality <= 100:
            raise InputError(f"invalid AVIF reference setting {setting}")

    def encode_reduced(self, reduced: np.ndarray, setting: ReferenceSetting) -> bytes:
        rh, rw = reduced.shape[:2]
        stripped = _avif.strip_avif(self.encode_avif_file(reduced, setting.quality))
        sh = stripped.header
        if (sh.width, sh.height) != (rw, rh):
            raise _avif.AvifLayoutError(f"Pillow wrote a {sh.width}x{sh.height} frame for {rw}x{rh}")
        default = sh.tools == _avif.DEFAULT_TOOLS
        out = bytearray([(CODEC_AVIF << 5) | sh.level, (setting.factor_index << 4) | (int(default) << 3)])
        if not default:
            out.append(sh.tools << 2)
        return bytes(out) + _size_header(setting.factor_index, rw, rh) + stripped.frame_payload

    def describe(self, payload: bytes, width: int, height: int) -> dict:
        _, _, rw, rh, _ = self.parse(payload, width, height)
        return {"codec": self.name, "width": rw, "height": rh}

    def parse(self, payload: bytes, width: int, height: int):
        """Header fields and frame: (level, tools, reduced width, reduced height, frame bytes).

        Every rule of the payload that needs no AV1 decoding is checked here (inspect applies it too)."""
        _check_target(width, height)
        if len(payload) < 3 or payload[0] >> 5 != CODEC_AVIF:
            raise BitstreamError("not an AVIF reference payload (or truncated)")
        level = payload[0] & 0x1F
        factor_index, default, reserved = payload[1] >> 4, (payload[1] >> 3) & 1, payload[1] & 7
        if reserved:
            raise BitstreamError("reserved bits set in AVIF reference header")
        pos = 2
        if default:
            tools = _avif.DEFAULT_TOOLS
        else:
            if payload[pos] & 3:
                raise BitstreamError("reserved bits set in AVIF tool flags")
            tools, pos = payload[pos] >> 2, pos + 1
        rw, rh, pos = _read_size(payload, pos, factor_index, width, height)
        frame = payload[pos:]
        if not frame:
            raise BitstreamError("AVIF reference payload has no coded frame")
        return level, tools, rw, rh, frame

    def decode_reduced(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """The AVIF image at its coded (reduced) size."""
        level, tools, rw, rh, frame = self.parse(payload, width, height)
        data = _avif.build_avif(_avif.SequenceHeader(rw, rh, level, tools), frame)
        try:
            with Image.open(io.BytesIO(data), formats=["AVIF"]) as im:
                im.load()
                if im.size != (rw, rh):
                    raise BitstreamError(f"AV1 frame decoded to {im.size}, expected {(rw, rh)}")
                arr = np.asarray(im.convert("RGB"))
        except BitstreamError:
            raise
        except Exception as exc:  # Pillow/libavif/dav1d report corrupt data in many ways
            raise BitstreamError(f"AVIF reference does not decode: {exc}") from exc
        return arr
