"""Classical and learned baseline codecs at a target rate, with the reference's downscale search.

At 0.01-0.05 bpp a classical codec at full resolution cannot reach the rate (or only with a
useless picture), so every baseline gets the search sedic's own reference gets
(sedic.streams.reference.encode_reference, docs/reference-stream.md "The search"): over the
downscale factors FACTORS (the reference's table; reduced sizes by its rule), per factor the
highest quality whose file fits, decoded and Lanczos-upscaled back to the original size, the
best PSNR winning. Rate accounting is the baselines' own: the whole encoded file (container and
headers included), plus 4 bytes for the original width and height (two uint16) when the image
was downscaled, since a decoder needs them.

CompressAI baselines code with the reference codec's coder (sedic.streams.codecs.compressai
.CompressAICoder: the same weights loading and the CDF tables the weights store) and find zoo
weights the way `sedic models` does (sedic.models).
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import InputError, RateError
from ..streams import reference as _reference
from ..streams.codecs import FACTORS, CompressAICoder, ReferenceCodec, ReferenceSetting, reduced_size

SIZE_SIDE_BYTES = 4
DEFAULT_FACTORS = tuple(float(f) for f in FACTORS)  # every factor of the reference's table


class BaselineUnavailable(Exception):
    """The codec cannot run here (encoder not installed, no weights); the message says why."""


@dataclass
class Encoded:
    data: bytes
    info: dict = field(default_factory=dict)  # factor, quality, coded size... (goes into the CSV/JSON)


class PillowCodec:
    """One Pillow format; `quality` is searched in [qmin, qmax]."""

    def __init__(self, name: str, fmt: str, qmin: int, qmax: int, ext: str, **options):
        self.name, self.fmt, self.qmin, self.qmax, self.ext = name, fmt, qmin, qmax, ext
        self.options = options

    def encode_at(self, img: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, self.fmt, quality=quality, **self.options)
        return buf.getvalue()

    def decode_raw(self, data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")


def _pillow_codecs() -> dict[str, Callable[[], PillowCodec]]:
    from PIL import features

    def jpeg():
        return PillowCodec("jpeg", "JPEG", 1, 95, ".jpg", optimize=True)  # libjpeg, 4:2:0, optimised Huffman

    def webp():
        if not features.check("webp"):
            raise BaselineUnavailable("Pillow was built without WebP")
        return PillowCodec("webp", "WEBP", 0, 100, ".webp", method=6)

    def avif():
        if not features.check("avif"):
            raise BaselineUnavailable("Pillow was built without AVIF (Pillow >= 11.2 with libavif)")
        # the same aom settings as sedic's own reference (tune=psnr), so the baseline differs only
        # by its container
        return PillowCodec("avif", "AVIF", 0, 100, ".avif", speed=6, advanced={"tune": "psnr"})

    def jxl():
        try:
            import pillow_jxl  # noqa: F401  (registers the JXL plugin)
        except ImportError:
            raise BaselineUnavailable("JPEG XL encoder not installed (pip install pillow-jxl-plugin)") from None
        return PillowCodec("jxl", "JXL", 0, 99, ".jxl", effort=7)  # 100 means lossless to libjxl

    def heic():
        try:
            import pillow_heif
        except ImportError:
            raise BaselineUnavailable("HEIC encoder not installed (pip install pillow-heif)") from None
        pillow_heif.register_heif_opener()
        return PillowCodec("heic", "HEIF", 0, 100, ".heic")

    return {"jpeg": jpeg, "webp": webp, "avif": avif, "jxl": jxl, "heic": heic}


CLASSICAL = ("jpeg", "webp", "avif", "jxl", "heic")


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)


class _File(bytes):
    """A baseline's file as the search counts it: `data` (the codec's own file) behind the 4 size
    bytes when downscaled."""

    data: bytes


class _SearchedCodec(ReferenceCodec):
    """A baseline codec as the reference's rate search sees it (never registered: baselines write
    their own files, not reference payloads). One per image: a payload carries the image's size."""

    codec_id = 0
    name = "baseline"

    def __init__(self, codec, factors: tuple[float, ...], width: int, height: int):
        self.codec, self.factors, self.width, self.height = codec, factors, width, height

    def qualities(self) -> list[int]:
        return list(range(self.codec.qmin, self.codec.qmax + 1))

    def settings(self, width: int, height: int) -> list[ReferenceSetting]:
        return [s for s in super().settings(width, height) if FACTORS[s.factor_index] in self.factors]

    def check_setting(self, setting: ReferenceSetting) -> None:
        pass

    def encode_reduced(self, reduced: np.ndarray, setting: ReferenceSetting) -> bytes:
        data = self.codec.encode_at(Image.fromarray(reduced), setting.quality)
        downscaled = reduced.shape[:2] != (self.height, self.width)
        out = _File(struct.pack(">HH", self.width, self.height) + data if downscaled else data)
        out.data = data
        return out

    def parse(self, payload: bytes, width: int, height: int) -> tuple:
        return ()

    def describe(self, payload: bytes, width: int, height: int) -> dict:
        return {"codec": self.codec.name}  # a whole file of its own, never in a .sedic file

    def decode_reduced(self, payload: bytes, width: int, height: int) -> np.ndarray:
        return np.asarray(self.codec.decode_raw(getattr(payload, "data", payload)))

    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        # Pillow's Lanczos upscale, as the baselines' decode does
        return np.asarray(_resize(self.codec.decode_raw(getattr(payload, "data", payload)), (width, height)),
                          dtype=np.uint8)


class SearchedBaseline:
    """A codec with quality levels, wrapped in the reference's downscale x quality search.

    `factors`: the downscale factors tried, a subset of the reference's FACTORS (1, 3/2, 2, ...)."""

    def __init__(self, codec, factors=DEFAULT_FACTORS):
        unknown = [f for f in factors if f not in FACTORS]
        if unknown:
            raise InputError(f"downscale factors {unknown} are not among {[float(f) for f in FACTORS]}")
        self.codec = codec
        self.name = codec.name
        self.ext = codec.ext
        self.factors = tuple(float(f) for f in factors)

    def encode(self, image: np.ndarray, target_bpp: float) -> Encoded:
        h, w = image.shape[:2]
        budget = int(target_bpp * w * h / 8)
        searched = _SearchedCodec(self.codec, self.factors, w, h)
        try:
            if budget < 1:
                raise RateError("no byte to spend")
            # every factor scored: a baseline gets its best over all sizes, not the climb's guess
            blob, setting = _reference.encode_reference(image, budget, searched, metric="psnr", sweep=True)
        except RateError:
            raise RateError(f"{self.name}: no downscale factor <= {max(self.factors):g} and quality fits "
                            f"{target_bpp} bpp ({budget} bytes)") from None
        factor = float(FACTORS[setting.factor_index])
        size = reduced_size(w, h, setting.factor_index)
        # Report the time of one encode of the chosen setting (downscale included), not the search.
        t = time.perf_counter()
        self.codec.encode_at(_resize(Image.fromarray(image), size), setting.quality)
        encode_s = time.perf_counter() - t
        return Encoded(bytes(blob), {"factor": factor, "quality": setting.quality, "coded_width": size[0],
                                     "coded_height": size[1], "encode_s": encode_s})

    def _reconstruct(self, data: bytes, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(_resize(self.codec.decode_raw(data), size), dtype=np.uint8)

    def decode(self, blob: bytes, size: tuple[int, int], info: dict) -> np.ndarray:
        data = blob[SIZE_SIDE_BYTES:] if info.get("factor", 1.0) != 1.0 else blob
        if info.get("factor", 1.0) != 1.0:
            width, height = struct.unpack(">HH", blob[:SIZE_SIDE_BYTES])
            size = (width, height)
        return self._reconstruct(data, size)


# ---------------------------------------------------------------- CompressAI

class CompressAIFile:
    """A CompressAI zoo architecture coded by the reference codec's CompressAICoder, in our own
    file; one quality level per available checkpoint.

    File layout we count in full: uint8 quality index, uint16 x2 coded size, uint16 x2 latent
    shape, then per string group a uint8 count and per string a uint32 length + bytes. The padded
    size is recomputed from the coded size by the decoder (pad to a multiple of 64, crop after
    decoding).
    """

    def __init__(self, arch: str, checkpoints: dict[int, str], device="cpu"):
        self.arch = arch
        self.name = f"compressai-{arch}"
        self.ext = ".cai"
        self.device = device
        self.checkpoints = dict(sorted(checkpoints.items()))
        self.qmin, self.qmax = 0, len(self.checkpoints) - 1  # index into the sorted qualities
        self._qualities = list(self.checkpoints)
        self.coder = CompressAICoder(arch, checkpoint=self.checkpoints, device=device)

    def encode_at(self, img: Image.Image, idx: int) -> bytes:
        w, h = img.size
        groups, shape = self.coder.compress(np.asarray(img), self._qualities[idx])
        # the latent grid the decoder starts from (its stride differs per model)
        parts = [struct.pack(">BHHHH", idx, w, h, shape[0], shape[1]), struct.pack(">B", len(groups))]
        for group in groups:
            parts.append(struct.pack(">B", len(group)))
            for s in group:
                parts.append(struct.pack(">I", len(s)) + s)
        return b"".join(parts)

    def decode_raw(self, data: bytes) -> Image.Image:
        idx, w, h, s0, s1 = struct.unpack(">BHHHH", data[:9])
        pos = 9
        (ngroups,) = struct.unpack(">B", data[pos:pos + 1])
        pos += 1
        strings = []
        for _ in range(ngroups):
            (n,) = struct.unpack(">B", data[pos:pos + 1])
            pos += 1
            group = []
            for _ in range(n):
                (ln,) = struct.unpack(">I", data[pos:pos + 4])
                group.append(data[pos + 4:pos + 4 + ln])
                pos += 4 + ln
            strings.append(group)
        return Image.fromarray(self.coder.decompress(strings, (s0, s1), self._qualities[idx], w, h))


def compressai_checkpoints(arch: str, given: dict[int, str], metric: str = "mse") -> dict[int, str]:
    """Checkpoints given on the command line, else the zoo's weights already in torch.hub's cache
    (where `sedic models download` and the zoo put them: sedic.models.compressai_paths)."""
    if given:
        return given
    try:
        from compressai.zoo.image import model_urls

        from ..models import compressai_paths, compressai_ref
    except ImportError:
        raise BaselineUnavailable("compressai is not installed") from None
    if arch not in model_urls:
        raise BaselineUnavailable(f"unknown CompressAI architecture {arch!r} (known: {', '.join(model_urls)})")
    qualities = tuple(sorted(model_urls[arch].get(metric, {})))
    paths = compressai_paths(compressai_ref(arch, metric, qualities)) if qualities else {}
    found = {q: p for q, p in paths.items() if os.path.isfile(p)}
    if not found:
        where = f"none in {os.path.dirname(next(iter(paths.values())))}" if paths else f"none for {metric}"
        raise BaselineUnavailable(
            f"no {arch} checkpoints offline (CompressAI zoo weights are downloaded; {where}); "
            f"pass --compressai-checkpoint {arch}:QUALITY=PATH")
    return found


def build_baseline(name: str, *, compressai_ckpts: dict[str, dict[int, str]] | None = None, device="cpu",
                   factors=DEFAULT_FACTORS) -> SearchedBaseline:
    """`name` is jpeg, webp, avif, jxl, heic or compressai-<architecture>."""
    if name in CLASSICAL:
        return SearchedBaseline(_pillow_codecs()[name](), factors)
    if name.startswith("compressai-"):
        arch = name[len("compressai-"):]
        ckpts = compressai_checkpoints(arch, (compressai_ckpts or {}).get(arch, {}))
        return SearchedBaseline(CompressAIFile(arch, ckpts, device), factors)
    raise InputError(f"unknown baseline {name!r} (known: {', '.join(CLASSICAL)}, compressai-<arch>)")


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
