"""Classical and learned baseline codecs at a target rate, with a downscale search.

At 0.01-0.05 bpp a classical codec at full resolution cannot reach the rate (or only with a
useless picture), so every baseline gets the same search: for each downscale factor in FACTORS,
Lanczos-downscale, find by bisection the largest quality whose whole file fits the target, decode,
Lanczos-upscale back to the original size; keep the (factor, quality) with the best PSNR.
Rate accounting: the whole encoded file (container and headers included), plus 4 bytes for the
original width and height (two uint16) when the image was downscaled, since a decoder needs them.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import InputError, RateError
from .metrics import psnr
from .weights import WeightsNotFound, find_file, hub_checkpoint_dir

FACTORS = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125, 0.09375, 0.0625)
SIZE_SIDE_BYTES = 4
MIN_SIDE = 8  # below this a codec's block structure dominates; not worth searching


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


class SearchedBaseline:
    """A codec with quality levels, wrapped in the downscale x quality search."""

    def __init__(self, codec, factors=FACTORS):
        self.codec = codec
        self.name = codec.name
        self.ext = codec.ext
        self.factors = factors

    def _fits(self, data: bytes, factor: float, budget: int) -> bool:
        return len(data) + (SIZE_SIDE_BYTES if factor != 1.0 else 0) <= budget

    def encode(self, image: np.ndarray, target_bpp: float) -> Encoded:
        h, w = image.shape[:2]
        budget = int(target_bpp * w * h / 8)
        src = Image.fromarray(image)
        best = None
        floor_q = self.codec.qmin
        worse = 0
        # Largest factor first: the quality that fits can only grow as the picture shrinks, so the
        # quality found at one factor is a lower bound for the bisection at the next.
        for factor in self.factors:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            if min(size) < MIN_SIDE:
                continue
            small = _resize(src, size)
            lo, hi = floor_q, self.codec.qmax
            data = self.codec.encode_at(small, lo)
            if not self._fits(data, factor, budget):
                if lo == self.codec.qmin:
                    continue  # even the lowest quality is too big at this size
                lo = self.codec.qmin  # the bound did not hold here: search the whole range
                data = self.codec.encode_at(small, lo)
                if not self._fits(data, factor, budget):
                    continue
            found = (lo, data)
            lo += 1
            while lo <= hi:  # bisection on the largest quality that fits (size grows with quality)
                mid = (lo + hi) // 2
                d = self.codec.encode_at(small, mid)
                if self._fits(d, factor, budget):
                    found, lo = (mid, d), mid + 1
                else:
                    hi = mid - 1
            q, data = found
            floor_q = q
            score = psnr(image, self._reconstruct(data, (w, h)))
            if best is None or score > best[0]:
                best, worse = (score, factor, q, data, size), 0
            else:
                # PSNR against the factor is unimodal in practice; two smaller factors in a row
                # that do worse end the search (saves most of the encodes at higher rates).
                worse += 1
                if worse >= 2:
                    break
        if best is None:
            raise RateError(f"{self.name}: no downscale factor >= {self.factors[-1]} and quality fits "
                            f"{target_bpp} bpp ({budget} bytes)")
        _, factor, q, data, size = best
        # Report the time of one encode of the chosen setting (downscale included), not the search.
        t = time.perf_counter()
        self.codec.encode_at(_resize(src, size), q)
        encode_s = time.perf_counter() - t
        side = SIZE_SIDE_BYTES if factor != 1.0 else 0
        # The file we store and count carries the original size in front when downscaled.
        blob = (struct.pack(">HH", w, h) + data) if side else data
        return Encoded(blob, {"factor": factor, "quality": q, "coded_width": size[0], "coded_height": size[1],
                             "encode_s": encode_s})

    def _reconstruct(self, data: bytes, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(_resize(self.codec.decode_raw(data), size), dtype=np.uint8)

    def decode(self, blob: bytes, size: tuple[int, int], info: dict) -> np.ndarray:
        data = blob[SIZE_SIDE_BYTES:] if info.get("factor", 1.0) != 1.0 else blob
        if info.get("factor", 1.0) != 1.0:
            width, height = struct.unpack(">HH", blob[:SIZE_SIDE_BYTES])
            size = (width, height)
        return self._reconstruct(data, size)


# ---------------------------------------------------------------- CompressAI

class CompressAICodec:
    """A CompressAI zoo architecture; one quality level per available checkpoint.

    File layout we count in full: uint8 quality index, uint16 x2 coded size, uint16 x2 latent
    shape, then per string
    group a uint8 count and per string a uint32 length + bytes. The padded size is recomputed
    from the coded size by the decoder (pad to a multiple of 64, crop after decoding).
    """

    def __init__(self, arch: str, checkpoints: dict[int, str], device="cpu"):
        self.arch = arch
        self.name = f"compressai-{arch}"
        self.ext = ".cai"
        self.device = device
        self.checkpoints = dict(sorted(checkpoints.items()))
        self.qmin, self.qmax = 0, len(self.checkpoints) - 1  # index into the sorted qualities
        self._models: dict[int, object] = {}

    def _model(self, idx: int):
        if idx not in self._models:
            import torch
            from compressai.zoo import image_models
            from compressai.zoo.image import model_architectures

            q, path = list(self.checkpoints.items())[idx]
            sd = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "state_dict" in sd:
                sd = sd["state_dict"]
            from compressai.zoo.pretrained import load_pretrained

            sd = load_pretrained(sd)
            try:
                model = model_architectures[self.arch].from_state_dict(sd)
            except Exception:  # architectures without from_state_dict: build by quality and load
                model = image_models[self.arch](quality=q, pretrained=False)
                model.load_state_dict(sd)
            model.update(force=True)
            self._models[idx] = model.to(self.device).eval()
        return self._models[idx]

    def encode_at(self, img: Image.Image, idx: int) -> bytes:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)
        h, w = x.shape[2:]
        ph, pw = (64 - h % 64) % 64, (64 - w % 64) % 64
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.no_grad():
            out = self._model(idx).compress(x)
        shape = tuple(out["shape"])  # latent grid the decoder starts from (stride differs per model)
        parts = [struct.pack(">BHHHH", idx, w, h, shape[0], shape[1])]
        parts.append(struct.pack(">B", len(out["strings"])))
        for group in out["strings"]:
            parts.append(struct.pack(">B", len(group)))
            for s in group:
                parts.append(struct.pack(">I", len(s)) + s)
        return b"".join(parts)

    def decode_raw(self, data: bytes) -> Image.Image:
        import torch

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
        with torch.no_grad():
            out = self._model(idx).decompress(strings, (s0, s1))
        x = torch.nan_to_num(out["x_hat"][0, :, :h, :w]).clamp(0, 1)
        arr = (x.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr)


def compressai_checkpoints(arch: str, given: dict[int, str], metric: str = "mse") -> dict[int, str]:
    """Checkpoints given on the command line, else zoo downloads already in the torch hub cache."""
    if given:
        return given
    try:
        from compressai.zoo.image import model_urls
    except ImportError:
        raise BaselineUnavailable("compressai is not installed") from None
    if arch not in model_urls:
        raise BaselineUnavailable(f"unknown CompressAI architecture {arch!r} (known: {', '.join(model_urls)})")
    found = {}
    for q, url in model_urls[arch].get(metric, {}).items():
        try:
            found[q] = str(find_file(url.rsplit("/", 1)[-1], None))
        except WeightsNotFound:
            pass
    if not found:
        raise BaselineUnavailable(
            f"no {arch} checkpoints offline (CompressAI zoo weights are downloaded; none in "
            f"{hub_checkpoint_dir()}); pass --compressai-checkpoint {arch}:QUALITY=PATH")
    return found


def build_baseline(name: str, *, compressai_ckpts: dict[str, dict[int, str]] | None = None, device="cpu",
                   factors=FACTORS) -> SearchedBaseline:
    """`name` is jpeg, webp, avif, jxl, heic or compressai-<architecture>."""
    if name in CLASSICAL:
        return SearchedBaseline(_pillow_codecs()[name](), factors)
    if name.startswith("compressai-"):
        arch = name[len("compressai-"):]
        ckpts = compressai_checkpoints(arch, (compressai_ckpts or {}).get(arch, {}))
        return SearchedBaseline(CompressAICodec(arch, ckpts, device), factors)
    raise InputError(f"unknown baseline {name!r} (known: {', '.join(CLASSICAL)}, compressai-<arch>)")


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
