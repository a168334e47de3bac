"""Reference-image stream: a tiny, heavily downscaled picture the diffusion decoder restores.

Every payload starts with one byte whose top 3 bits are the codec id (see
docs/reference-stream.md for the exact layouts):

    1  AVIF (Pillow / libavif / aom), container stripped, rebuilt at decode time
    2  CompressAI learned codec (model.compress strings)

The payload is self-contained given the original width and height: the reduced
size is a 4-bit index into FACTORS (or an explicit size), so a downscale search
costs at most a byte. Decoders upsample to full size with a Lanczos-3 rule in integer
arithmetic (sedic.streams.lanczos), a fixed deterministic rule.
"""

from __future__ import annotations

import abc
import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

from sedic.bitstream import MAX_SIDE as MAX_FILE_SIDE, read_varint, write_varint
from sedic.errors import BitstreamError, InputError, ModelUnavailableError, RateError
from sedic.streams import avif as _avif, lanczos as _lanczos, reference_refine as _refine

# Downscale factors; a payload stores the index (4 bits). Index 15 means "explicit
# size follows". Exact fractions so the reduced size is the same on every machine.
FACTORS: tuple[Fraction, ...] = tuple(Fraction(f) for f in
                                      ("1", "3/2", "2", "5/2", "3", "4", "5", "6", "8", "10", "12", "16"))
EXPLICIT_SIZE = 15
MIN_SIDE = 16
MAX_SIDE = 65535  # sanity limit on the original size we are asked to decode to

CODEC_AVIF = 1
CODEC_COMPRESSAI = 2


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
    codec_id: int

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
    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> uint8 (height, width, 3), upsampled to full size."""

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


class AvifCodec(ReferenceCodec):
    """AV1 still picture via Pillow's AVIF plugin (aom encoder), sent without its container.

    Payload: byte 0 = codec id (3 bits) | seq_level_idx (5 bits);
             byte 1 = factor index (4 bits) | default-tools flag (1 bit) | 000;
             [1 byte: tool flags (6 bits) << 2, when the flag is 0];
             [varint width-1, varint height-1, when the factor index is 15];
             the AV1 frame OBU payload (rest of the payload, non-empty).
    """

    codec_id = CODEC_AVIF

    # aom tunings we accept (encoder-only; the payload does not depend on it). None leaves
    # libavif's default, which for stills with this aom is tune=iq (perceptual, deltaq on).
    TUNES = ("psnr", "ssim", "iq", None)

    def __init__(self, speed: int = 6, tune: str | None = "psnr", **unknown):
        if unknown:
            raise InputError(f"unknown AVIF reference options: {sorted(unknown)}")
        if not isinstance(speed, int) or not 0 <= speed <= 10:
            raise InputError("AVIF speed must be an integer 0..10")
        if tune not in self.TUNES:
            raise InputError(f"AVIF tune must be one of {self.TUNES}")
        self.speed = speed
        self.tune = tune

    def qualities(self) -> list[int]:
        return list(range(101))

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

    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        return upsample(self.decode_reduced(payload, width, height), width, height)


# CompressAI models a payload can name (3-bit index); never reorder, only append.
COMPRESSAI_MODELS = ("cheng2020-attn", "cheng2020-anchor", "mbt2018", "mbt2018-mean",
                     "bmshj2018-hyperprior", "bmshj2018-factorized")
_PAD = 64


class CompressAICodec(ReferenceCodec):
    """A CompressAI model's real entropy-coded strings.

    Payload: byte 0 = codec id (3 bits) | model index (3 bits) | 00;
             byte 1 = factor index (4 bits) | quality - 1 (4 bits);
             [varint width-1, varint height-1, when the factor index is 15];
             for every string but the last: varint length + bytes; the last string is the rest.
    The latent shape is not stored: it follows from the reduced size padded to 64.

    Options: model (name), metric ("mse"/"ms-ssim", zoo weights only), checkpoint (state-dict
    path, "{quality}" in it is replaced, or a dict quality -> path), nets (dict quality -> a
    ready model, for tests and embedding).
    """

    codec_id = CODEC_COMPRESSAI

    def __init__(self, model: str = "cheng2020-attn", metric: str = "mse", checkpoint=None, nets=None,
                 qualities=None, **unknown):
        if unknown:
            raise InputError(f"unknown CompressAI reference options: {sorted(unknown)}")
        if model not in COMPRESSAI_MODELS:
            raise InputError(f"unknown CompressAI model {model!r}; known: {', '.join(COMPRESSAI_MODELS)}")
        self.model = model
        self.metric = metric
        self.checkpoint = checkpoint
        self._nets = dict(nets or {})
        self._qualities = list(qualities) if qualities else self._model_qualities(model)

    @staticmethod
    def _model_qualities(model: str) -> list[int]:
        return [1, 2, 3, 4, 5, 6] if model.startswith("cheng2020") else list(range(1, 9))

    def qualities(self) -> list[int]:
        return list(self._qualities)

    def _num_strings(self) -> int:
        return 1 if self.model == "bmshj2018-factorized" else 2

    def _shape(self, rw: int, rh: int) -> tuple[int, int]:
        hp, wp = -(-rh // _PAD) * _PAD, -(-rw // _PAD) * _PAD
        down = 16 if self.model == "bmshj2018-factorized" else 64  # shape of the last-coded latent
        return hp // down, wp // down

    def net(self, quality: int):
        """The model for this quality: injected, from a checkpoint, or from CompressAI's zoo."""
        if quality in self._nets:
            return self._nets[quality]
        try:
            import torch
            from compressai.zoo import image as zoo
            from compressai.zoo.pretrained import load_pretrained
        except Exception as exc:
            raise ModelUnavailableError(f"CompressAI model {self.model!r} needs torch and compressai: {exc}") from exc
        hint = (f"pass checkpoint=<path to a state dict of {self.model}> "
                f"('{{quality}}' in the path is replaced, or a dict quality -> path)")
        path = self.checkpoint.get(quality) if isinstance(self.checkpoint, dict) else self.checkpoint
        if path is None:  # the zoo's weights: torch.hub's cache first, then the network
            from sedic.models import load_compressai

            net = load_compressai(self.model, self.metric, quality)
        else:
            try:
                path = os.fspath(path).replace("{quality}", str(quality))
                state = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:  # training checkpoints
                    state = state["state_dict"]
                state = load_pretrained({k.removeprefix("module."): v for k, v in state.items()})
                net = zoo.model_architectures[self.model].from_state_dict(state)
            except Exception as exc:
                raise ModelUnavailableError(
                    f"CompressAI model {self.model!r} quality {quality} cannot be loaded from checkpoint "
                    f"{path!r}: {type(exc).__name__}: {exc}; {hint}") from exc
        net.eval()
        # force=False keeps the entropy-coder tables stored in the checkpoint, so every
        # machine codes with the same CDFs instead of recomputing them in float.
        net.update()
        self._nets[quality] = net
        return net

    def check_setting(self, setting: ReferenceSetting) -> None:
        if not 0 <= setting.factor_index < len(FACTORS) or not 1 <= setting.quality <= 16:
            raise InputError(f"invalid CompressAI reference setting {setting}")

    def encode_reduced(self, reduced: np.ndarray, setting: ReferenceSetting) -> bytes:
        import torch
        import torch.nn.functional as F

        rh, rw = reduced.shape[:2]
        x = torch.from_numpy(np.array(reduced)).permute(2, 0, 1)[None].float() / 255
        ph, pw = (-rh) % _PAD, (-rw) % _PAD
        # Replicate padding costs fewer bits than zeros; it is cropped after decoding.
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.no_grad():
            out = self.net(setting.quality).compress(x)
        if tuple(out["shape"]) != self._shape(rw, rh) or len(out["strings"]) != self._num_strings():
            raise InputError(f"{self.model} produced an unexpected latent layout")
        strings = [s[0] for s in out["strings"]]
        body = b"".join(write_varint(len(s)) + s for s in strings[:-1]) + strings[-1]
        header = bytes([(CODEC_COMPRESSAI << 5) | (COMPRESSAI_MODELS.index(self.model) << 2),
                        (setting.factor_index << 4) | (setting.quality - 1)])
        return header + _size_header(setting.factor_index, rw, rh) + body

    def parse(self, payload: bytes, width: int, height: int):
        """Header and strings; every check happens before a model is loaded."""
        _check_target(width, height)
        if len(payload) < 2 or payload[0] >> 5 != CODEC_COMPRESSAI:
            raise BitstreamError("not a CompressAI reference payload (or truncated)")
        model_index, reserved = (payload[0] >> 2) & 7, payload[0] & 3
        if reserved or model_index >= len(COMPRESSAI_MODELS):
            raise BitstreamError("bad CompressAI reference header")
        if COMPRESSAI_MODELS[model_index] != self.model:
            raise BitstreamError(f"payload was coded with {COMPRESSAI_MODELS[model_index]}, "
                                 f"decoder configured for {self.model}")
        factor_index, quality = payload[1] >> 4, (payload[1] & 15) + 1
        if quality not in self._model_qualities(self.model):
            raise BitstreamError(f"quality {quality} invalid for {self.model}")
        rw, rh, pos = _read_size(payload, 2, factor_index, width, height)
        strings = []
        for _ in range(self._num_strings() - 1):
            n, pos = read_varint(payload, pos, "CompressAI string length", len(payload))
            if pos + n > len(payload):
                raise BitstreamError("CompressAI string runs past the end of the payload")
            strings.append(payload[pos:pos + n])
            pos += n
        strings.append(payload[pos:])
        return quality, rw, rh, strings

    def decode_reduced(self, payload: bytes, width: int, height: int) -> np.ndarray:
        import torch

        quality, rw, rh, strings = self.parse(payload, width, height)
        net = self.net(quality)
        try:
            with torch.no_grad():
                x = net.decompress([[s] for s in strings], self._shape(rw, rh))["x_hat"]
        except Exception as exc:
            raise BitstreamError(f"CompressAI reference does not decode: {exc}") from exc
        x = x[0, :, :rh, :rw].clamp(0, 1).mul(255).round().to(torch.uint8)
        return x.permute(1, 2, 0).contiguous().numpy()

    def decode(self, payload: bytes, width: int, height: int) -> np.ndarray:
        return upsample(self.decode_reduced(payload, width, height), width, height)


_COMPRESSAI_OPTIONS = ("model", "metric", "checkpoint", "nets", "qualities")

# ------------------------------------------------------------ API


def make_codec(name: str, **options) -> ReferenceCodec:
    """"avif" (default, offline) or "compressai" (options: model, checkpoint, ...)."""
    if name == "avif":
        return AvifCodec(**options)
    if name == "compressai":
        return CompressAICodec(**options)
    raise InputError(f"unknown reference codec {name!r} (known: avif, compressai)")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR over every sample; summed in row blocks of exact integers, so a 45 MP image
    needs no full-size float copies."""
    if a.shape != b.shape:
        raise ValueError(f"psnr of arrays shaped {a.shape} and {b.shape}")
    rows = max(1, (1 << 20) // max(1, a[0].size))
    sse = 0
    for i in range(0, a.shape[0], rows):
        d = (a[i:i + rows].astype(np.int64) - b[i:i + rows]).ravel()
        sse += int(np.dot(d, d))
    mse = sse / a.size
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    ta, tb = (torch.from_numpy(np.array(v)).permute(2, 0, 1)[None].double() for v in (a, b))
    return float(_ms_ssim(ta, tb, data_range=255))


_METRICS = {"psnr": psnr, "ms-ssim": ms_ssim}

# Where the best downscale lies: on Kodak the chosen reduced image gets 0.15-0.25 bits per reduced
# pixel at 0.01-0.05 bpp (smooth upscaled 12 MP images: more), so the climb starts there.
START_BITS_PER_PIXEL = 0.25
# log(bytes) grows about linearly with the quality index (AVIF: x1.5 per 10 qualities) and with
# log(pixels) (exponent ~0.8): the model that places each factor's first quality probe.
_LOG_BYTES_PER_QUALITY = 0.04
_SIZE_EXPONENT = 0.8


class _Search:
    """Best payload within a byte budget over factors x qualities, probing few settings.

    Per factor: the highest quality that fits, found by a bracketing search whose probes come
    from a log-rate model (fitted to the probes made so far) instead of halving 0..100. Over the
    factors: a climb from the size the rate model names, scoring each factor's candidate exactly
    as a decoder sees it, towards the side that improves, until two factors in a row score lower. A size whose
    lowest quality does not fit ends the climb towards larger sizes (larger sizes cost more at
    every quality). The image is downscaled once per factor from one Pillow copy; the two
    neighbours of the start are searched at once on two threads (aom and dav1d release the GIL).
    The result does not depend on thread timing: a factor's probes depend only on its own probes
    and those of factors finished in earlier rounds."""

    def __init__(self, image, max_bytes, codec, score, progress, threads=2):
        self.image, self.max_bytes, self.codec, self.score, self.progress = image, max_bytes, codec, score, progress
        self.threads = threads
        self.h, self.w = image.shape[:2]
        by_factor: dict[int, list[int]] = {}
        for st in codec.settings(self.w, self.h):
            by_factor.setdefault(st.factor_index, []).append(st.quality)
        self.qualities = by_factor
        self.factors = sorted(by_factor, key=lambda fi: -FACTORS[fi])  # smallest reduced size first
        self.pixels = {fi: math.prod(reduced_size(self.w, self.h, fi)) for fi in self.factors}
        self.sizes: dict[int, dict[int, int]] = {fi: {} for fi in self.factors}  # quality index -> bytes
        self.known: dict[int, dict[int, int]] = {}  # the probes of factors finished in earlier rounds
        self.payloads: dict[tuple[int, int], bytes] = {}
        self.results: dict[int, tuple | None] = {}
        self._source = Image.fromarray(self.image)

    # -------------------------------------------------------- one factor
    def reduced(self, fi: int) -> np.ndarray:
        rw, rh = reduced_size(self.w, self.h, fi)
        if (rw, rh) == (self.w, self.h):
            return self.image
        return np.asarray(self._source.resize((rw, rh), Image.Resampling.LANCZOS))

    def _predict(self, fi: int, i: int) -> float:
        """Predicted log(bytes) of quality index i at factor fi."""
        own = self.sizes[fi]
        if own:
            ref_fi, points = fi, own
        elif self.known:
            ref_fi = min(self.known, key=lambda f: (abs(math.log(self.pixels[f] / self.pixels[fi])), f))
            points = self.known[ref_fi]
        else:
            # nothing probed yet: the first probe at 30 % of the range, where the chosen quality
            # usually lies (AVIF 20-40 on Kodak and at 12 MP)
            return math.log(self.max_bytes) + _LOG_BYTES_PER_QUALITY * (i - (3 * len(self.qualities[fi])) // 10)
        shift = _SIZE_EXPONENT * math.log(self.pixels[fi] / self.pixels[ref_fi])
        xs = sorted(points)
        below, above = [x for x in xs if x <= i], [x for x in xs if x >= i]
        if below and above and below[-1] != above[0]:
            a, b = below[-1], above[0]
            la, lb = math.log(points[a]), math.log(points[b])
            return shift + la + (lb - la) * (i - a) / (b - a)
        a = below[-1] if below else above[0]
        # outside the probes: the slope of the two nearest, else the default
        near = sorted(xs, key=lambda x: (abs(x - i), x))[:2]
        slope = _LOG_BYTES_PER_QUALITY
        if len(near) == 2:
            slope = max(1e-3, (math.log(points[near[1]]) - math.log(points[near[0]])) / (near[1] - near[0]))
        return shift + math.log(points[a]) + slope * (i - a)

    def fit(self, fi: int):
        """Index of the highest quality whose payload fits, or None when even the lowest does not."""
        n = len(self.qualities[fi])
        reduced = self.reduced(fi)
        lo, hi = -1, n  # lo fits (or -1: not shown), hi does not fit (or n: not shown)
        target = math.log(self.max_bytes)
        same_side, last = 0, None
        while hi - lo > 1:
            if same_side >= 2 and lo >= 0 and hi < n:
                i = (lo + hi) // 2  # the model keeps missing on one side: halve the bracket
            else:
                # the highest quality the model expects to fit; at lo + 1 it confirms lo
                guess = max([i for i in range(n) if self._predict(fi, i) <= target], default=0)
                i = min(max(guess, lo + 1), hi - 1)
            payload = self.codec.encode_reduced(reduced, ReferenceSetting(fi, self.qualities[fi][i]))
            self.payloads[(fi, i)] = payload
            self.sizes[fi][i] = len(payload)
            fits = len(payload) <= self.max_bytes
            same_side, last = (same_side + 1 if fits == last else 1), fits
            if fits:
                lo = i
            else:
                hi = i
        return lo if lo >= 0 else None

    def _evaluate(self, fi: int):
        i = self.fit(fi)
        if i is None:
            return None
        payload = self.payloads[(fi, i)]
        value = self.score(self.image, self.codec.decode(payload, self.w, self.h))
        return (value, -len(payload)), payload, ReferenceSetting(fi, self.qualities[fi][i])

    def evaluate(self, positions: list[int]) -> None:
        """Search and score the factors at these positions (at once), in one round."""
        todo = [self.factors[k] for k in positions if self.factors[k] not in self.results]
        if len(todo) > 1 and self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.threads, len(todo))) as pool:
                results = list(pool.map(self._evaluate, todo))
        else:
            results = [self._evaluate(fi) for fi in todo]
        for fi, result in zip(todo, results, strict=True):
            self.results[fi] = result
            self.known[fi] = dict(self.sizes[fi])
            if self.progress is not None:
                rw, rh = reduced_size(self.w, self.h, fi)
                what = "lowest quality does not fit" if result is None else (
                    f"quality {result[2].quality}, {len(result[1])} bytes, score {result[0][0]:.3f}")
                self.progress(f"reference factor {float(FACTORS[fi]):g} ({rw}x{rh}): {what}")

    def result(self, k: int):
        return self.results[self.factors[k]]

    # -------------------------------------------------------- over the factors
    def run(self):
        bits = [8 * self.max_bytes / self.pixels[fi] for fi in self.factors]
        p = min(range(len(self.factors)), key=lambda k: abs(math.log(bits[k] / START_BITS_PER_PIXEL)))
        self.evaluate([p])
        while self.result(p) is None:  # a start that does not fit: smaller sizes until one does
            if p == 0:
                return None
            p -= 1
            self.evaluate([p])
        best, step = p, 0
        # the two neighbours at once; when neither improves, the next two (PSNR against the factor
        # is not always unimodal: a worse factor can sit between two better ones)
        for reach in (1, 2):
            sides = [k for k in (p + reach, p - reach) if 0 <= k < len(self.factors)
                     and not (k > p + 1 and self.result(p + 1) is None)]  # above a size that does not fit
            self.evaluate(sides)
            better = [k for k in sides if self._beats(k, best)]
            if better:
                best = max(better, key=lambda k: self.result(k)[0])
                step = 1 if best > p else -1
                break
        while step:  # on along the side that improved, looking one factor past a worse one
            ahead = [k for k in (best + step, best + 2 * step) if 0 <= k < len(self.factors)]
            if not ahead:
                break
            # towards smaller sizes both at once (a result is kept, so none is wasted but the last);
            # towards larger ones one by one: none above a size that does not fit
            self.evaluate(ahead if step < 0 else ahead[:1])
            if self._beats(ahead[0], best):
                best = ahead[0]
                continue
            if self.result(ahead[0]) is None or len(ahead) < 2:
                break  # a larger size that does not fit: no larger one does
            self.evaluate(ahead[1:])
            if not self._beats(ahead[1], best):
                break
            best = ahead[1]
        return self.result(best)

    def _beats(self, k: int, best: int) -> bool:
        return self.result(k) is not None and self.result(k)[0] > self.result(best)[0]


def encode_reference(image, max_bytes: int, codec: ReferenceCodec, metric: str = "psnr", progress=None):
    """Best payload of at most max_bytes, with its setting.

    Searches factors x qualities (_Search): per factor the highest quality that fits (assuming
    the payload grows with quality and with size), each factor's candidate decoded exactly as a
    decoder would (payload -> full size) and scored against the image with `metric` ("psnr" or
    "ms-ssim"); the best score wins, ties going to the smaller payload. progress(text), when
    given, hears of every factor scored. A plain AvifCodec's result is then refined
    (sedic.streams.reference_refine: final encodes at aom speed 2, the reduced size grown to fill
    the budget, explicit size index 15 when it is not a factor's), never scoring lower.
    """
    image = _check_image(image)
    if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise InputError("max_bytes must be a positive integer")
    if metric not in _METRICS:
        raise InputError(f"unknown metric {metric!r} (known: {', '.join(_METRICS)})")
    best = _Search(image, int(max_bytes), codec, _METRICS[metric], progress).run()
    if best is None:
        h, w = image.shape[:2]
        raise RateError(f"no reference setting fits in {max_bytes} bytes for a {w}x{h} image")
    return _refine.refine_reference(image, int(max_bytes), codec, best[1], best[2], _METRICS[metric], progress)


def _compressai_model(payload: bytes) -> str:
    idx = (payload[0] >> 2) & 7
    if idx >= len(COMPRESSAI_MODELS):
        raise BitstreamError("bad CompressAI reference header")
    return COMPRESSAI_MODELS[idx]


def check_payload(payload: bytes, width: int, height: int) -> None:
    """Every rule of a reference payload that needs no decoding: codec id, reserved bits, tool
    flags, factor index, explicit size, CompressAI model and quality, string lengths.

    `sedic inspect` and `sedic decompress` both apply it, so they accept exactly the same files
    as far as the header goes (docs/bitstream.md, "Must-reject rules")."""
    if not isinstance(payload, (bytes, bytearray)) or not payload:
        raise BitstreamError("empty reference payload")
    payload = bytes(payload)
    cid = payload[0] >> 5
    if cid == CODEC_AVIF:
        AvifCodec().parse(payload, width, height)
    elif cid == CODEC_COMPRESSAI:
        CompressAICodec(model=_compressai_model(payload)).parse(payload, width, height)
    else:
        raise BitstreamError(f"unknown reference codec id {cid}")


def decode_reference(payload: bytes, width: int, height: int, **codec_options) -> np.ndarray:
    """Decode any reference payload; the codec comes from the top 3 bits of byte 0."""
    check_payload(payload, width, height)
    cid = payload[0] >> 5
    if cid == CODEC_AVIF:
        # AVIF decoding takes no options (speed is an encoder setting); options meant for
        # another codec are ignored so a caller can pass one set for any payload.
        return AvifCodec().decode(bytes(payload), width, height)
    codec_options = {k: v for k, v in codec_options.items() if k in _COMPRESSAI_OPTIONS}
    if "model" not in codec_options:
        # The payload names its model; the options only say where weights are.
        codec_options = {**codec_options, "model": _compressai_model(payload)}
    return CompressAICodec(**codec_options).decode(bytes(payload), width, height)
