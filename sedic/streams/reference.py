"""Reference-image stream: a tiny, heavily downscaled picture the diffusion decoder restores.

Every payload starts with one byte whose top 3 bits are the codec id (see
docs/reference-stream.md for the exact layouts). The codecs and the one lookup by id or name
live in sedic.streams.codecs (one module per codec, `CODECS` the registry):

    1  AVIF (Pillow / libavif / aom), container stripped, rebuilt at decode time
    2  CompressAI learned codec (model.compress strings)

The payload is self-contained given the original width and height: the reduced
size is a 4-bit index into FACTORS (or an explicit size), so a downscale search
costs at most a byte. Decoders upsample to full size with a Lanczos-3 rule in integer
arithmetic (sedic.streams.lanczos), a fixed deterministic rule.

This module holds the rate search (`encode_reference`) and its scores; the codec names are
re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from sedic.errors import InputError, RateError
from sedic.streams import reference_refine as _refine
from sedic.streams.codecs import (  # noqa: F401 - re-exported: the stream's API is this module
    CODEC_AVIF,
    CODEC_COMPRESSAI,
    CODECS,
    COMPRESSAI_MODELS,
    EXPLICIT_SIZE,
    FACTORS,
    MAX_SIDE,
    MIN_SIDE,
    AvifCodec,
    CompressAICodec,
    ReferenceCodec,
    ReferenceSetting,
    check_payload,
    codec_class,
    decode_reference,
    make_codec,
    payload_codec,
    reduced_size,
    upsample,
)
from sedic.streams.codecs.base import _check_image, _resize  # noqa: F401 - the search's input check; tools

PSNR_CAP = 100.0  # identical images; never above it (a finite number for tables and JSON)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR over every sample, peak 255, capped at PSNR_CAP dB: the one PSNR of sedic (the
    search's score and the evaluation's metric). Summed in row blocks of exact integers, so a
    45 MP image needs no full-size float copies."""
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"images must both be (H, W, 3), got {a.shape} and {b.shape}")
    rows = max(1, (1 << 20) // max(1, a[0].size))
    sse = 0
    for i in range(0, a.shape[0], rows):
        d = (a[i:i + rows].astype(np.int64) - b[i:i + rows]).ravel()
        sse += int(np.dot(d, d))
    if sse == 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10 * math.log10(255.0 ** 2 * a.size / sse))


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
# ... and when the downscale causes little of the start's error (_SHARE_SMALLER below): the
# image is smooth at that size and its bytes grow more slowly with pixels (12 MP upscaled
# kodim01: 0.56 between the sizes it chooses among; Kodak's starts never get there at 0.02-0.05).
_SIZE_EXPONENT_SMOOTH = 0.6
# The side the climb tries first, from the downscale's share of the start's squared error: on
# Kodak the best factor's share is 0.12-0.78, at 12 MP (upscaled Kodak) 0.08 (start: 0.01).
_SHARE_SMALLER, _SHARE_LARGER = 0.15, 0.7
_SLOPE_RANGE = (0.02, 0.09)      # d log(bytes) / d quality seen with AVIF (steep at low qualities)
_EXPONENT_RANGE = (0.3, 1.1)     # d log(bytes) / d log(pixels): smooth large images ~0.5, Kodak ~0.8


class _Search:
    """Best payload within a byte budget over factors x qualities, probing few settings.

    Per factor: the highest quality that fits, found by a bracketing search whose probes come
    from a log-rate model (fitted to the probes made so far) instead of halving 0..100. Over the
    factors: a climb from the size the rate model names, scoring each factor's candidate exactly
    as a decoder sees it, towards the side that improves, until two factors in a row score lower;
    the side tried first comes from how much of the start's error the downscale alone causes
    (_downscale_share). A size whose
    lowest quality does not fit ends the climb towards larger sizes (larger sizes cost more at
    every quality). The image is downscaled once per factor from one Pillow copy; the two
    neighbours of the start are searched at once on two threads (aom and dav1d release the GIL).
    The result does not depend on thread timing: a factor's probes depend only on its own probes
    and those of factors finished in earlier rounds."""

    def __init__(self, image, max_bytes, codec, score, progress, threads=2, sweep=False):
        self.image, self.max_bytes, self.codec, self.score, self.progress = image, max_bytes, codec, score, progress
        self.threads, self.sweep = threads, sweep
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
        self.start: int | None = None  # the factor the climb starts from
        self.share = 0.5  # the downscale's share of its candidate's squared error

    # -------------------------------------------------------- one factor
    def reduced(self, fi: int) -> np.ndarray:
        rw, rh = reduced_size(self.w, self.h, fi)
        if (rw, rh) == (self.w, self.h):
            return self.image
        return np.asarray(self._source.resize((rw, rh), Image.Resampling.LANCZOS))

    @staticmethod
    def _slope(points: dict[int, int], i: int) -> float | None:
        """d log(bytes) / d quality index near i from a factor's probes: the two nearest probes at
        least 3 indices apart (neighbouring AVIF qualities often share a quantiser, so the slope of
        two adjacent probes can be 0), clamped to the range AVIF shows; None with fewer than two."""
        xs = sorted(points, key=lambda x: (abs(x - i), x))
        for a in xs:
            for b in xs:
                if abs(b - a) >= 3:
                    s = (math.log(points[b]) - math.log(points[a])) / (b - a)
                    return min(_SLOPE_RANGE[1], max(_SLOPE_RANGE[0], s))
        return None

    def _curve(self, points: dict[int, int], i: int, slope: float | None = None) -> float:
        """log(bytes) at quality index i from one factor's probes: interpolated between the two
        probes around i, else extrapolated from the nearest with the local slope."""
        xs = sorted(points)
        below, above = [x for x in xs if x <= i], [x for x in xs if x >= i]
        if below and above:
            a, b = below[-1], above[0]
            la, lb = math.log(points[a]), math.log(points[b])
            return la if a == b else la + (lb - la) * (i - a) / (b - a)
        a = below[-1] if below else above[0]
        own = self._slope(points, i)
        s = own if own is not None else (slope if slope is not None else _LOG_BYTES_PER_QUALITY)
        return math.log(points[a]) + s * (i - a)

    def _exponent(self, fi: int) -> float:
        """How log(bytes) grows with log(pixels) near factor fi: measured between the two finished
        factors nearest to it (at the first one's chosen quality), else the default."""
        near = sorted(self.known, key=lambda f: (abs(math.log(self.pixels[f] / self.pixels[fi])), f))[:2]
        if len(near) < 2:
            return _SIZE_EXPONENT_SMOOTH if self.share < _SHARE_SMALLER else _SIZE_EXPONENT
        a, b = near
        q = max(self.known[a], key=lambda x: (self.known[a][x] <= self.max_bytes, x))
        e = (self._curve(self.known[a], q) - self._curve(self.known[b], q)) / math.log(self.pixels[a] / self.pixels[b])
        return min(_EXPONENT_RANGE[1], max(_EXPONENT_RANGE[0], e))

    def decoded(self, payload: bytes) -> np.ndarray:
        """The candidate as a decoder sees it. The upsampling is Pillow's LANCZOS, whose integer
        arithmetic the normative rule (sedic.streams.lanczos) writes out: the same pixels
        (tests/test_lanczos.py, and tests/test_reference_search.py on the search's own
        candidates), in C, 2-3x faster than our numpy passes."""
        reduce = getattr(self.codec, "decode_reduced", None)
        if reduce is None:
            return self.codec.decode(payload, self.w, self.h)
        small = reduce(payload, self.w, self.h)
        if small.shape[:2] == (self.h, self.w):
            return small
        return np.asarray(Image.fromarray(small).resize((self.w, self.h), Image.Resampling.LANCZOS))

    def _predict(self, fi: int, i: int) -> float:
        """Predicted log(bytes) of quality index i at factor fi."""
        ref_fi = min(self.known, key=lambda f: (abs(math.log(self.pixels[f] / self.pixels[fi])), f)) \
            if self.known else None
        ref_slope = None if ref_fi is None else self._slope(self.known[ref_fi], i)
        own = self.sizes[fi]
        if own:
            return self._curve(own, i, ref_slope)
        if ref_fi is None:
            # nothing probed yet: the first probe at 30 % of the range, where the chosen quality
            # usually lies (AVIF 20-40 on Kodak and at 12 MP)
            return math.log(self.max_bytes) + _LOG_BYTES_PER_QUALITY * (i - (3 * len(self.qualities[fi])) // 10)
        shift = self._exponent(fi) * math.log(self.pixels[fi] / self.pixels[ref_fi])
        return shift + self._curve(self.known[ref_fi], i)

    def _trend(self, fi: int) -> int | None:
        """A factor's first probe once two factors are finished: the chosen quality index
        extrapolated linearly in log(pixels) from the two finished factors nearest to fi that have
        a candidate (12 MP kodim01: 3 -> 4 -> 5 chose 29, 35, 42; 6 chooses 48, the trend says 48).
        None with fewer than two."""
        done = [f for f in self.known if self.results.get(f) is not None]
        near = sorted(done, key=lambda f: (abs(math.log(self.pixels[f] / self.pixels[fi])), f))[:2]
        if len(near) < 2 or self.pixels[near[0]] == self.pixels[near[1]]:
            return None
        (a, b), qs = near, self.qualities[fi]
        qa, qb = (self.qualities[f].index(self._chosen(f)) for f in (a, b))
        q = qa + (qa - qb) * math.log(self.pixels[fi] / self.pixels[a]) / math.log(self.pixels[a] / self.pixels[b])
        return min(len(qs) - 1, max(0, round(q)))

    def _chosen(self, fi: int) -> int:
        result = self.results[fi]
        assert result is not None
        return result[2].quality

    def fit(self, fi: int, reduced: np.ndarray):
        """Index of the highest quality whose payload fits, or None when even the lowest does not."""
        n = len(self.qualities[fi])
        lo, hi = -1, n  # lo fits (or -1: not shown), hi does not fit (or n: not shown)
        target = math.log(self.max_bytes)
        same_side, last = 0, None
        while hi - lo > 1:
            if same_side >= 2 and lo >= 0 and hi < n:
                i = (lo + hi) // 2  # the model keeps missing on one side: halve the bracket
            else:
                # the highest quality expected to fit; at lo + 1 it confirms lo
                guess = self._trend(fi) if not self.sizes[fi] else None
                if guess is None:
                    guess = max([i for i in range(n) if self._predict(fi, i) <= target], default=0)
                i = min(max(guess, lo + 1), hi - 1)
            payload = self.codec.encode_reduced(reduced, ReferenceSetting(fi, self.qualities[fi][i]))
            same = self._same_payload(fi, i)
            for j in same:
                self.payloads[(fi, j)] = payload
            self.sizes[fi][i] = len(payload)  # the probe alone: the rate model's slopes
            fits = len(payload) <= self.max_bytes
            same_side, last = (same_side + 1 if fits == last else 1), fits
            if fits:
                lo = same[-1]
            else:
                hi = same[0]
        return lo if lo >= 0 else None

    def _same_payload(self, fi: int, i: int) -> list[int]:
        """The quality indices at fi whose payload is the one of index i (ascending): those the
        codec codes with the same quantiser (AVIF: 101 qualities, 64 quantisers), else i alone."""
        quantizer = getattr(self.codec, "quantizer", None)
        qs = self.qualities[fi]
        if quantizer is None:
            return [i]
        q = quantizer(qs[i])
        lo = hi = i
        while lo > 0 and quantizer(qs[lo - 1]) == q:
            lo -= 1
        while hi + 1 < len(qs) and quantizer(qs[hi + 1]) == q:
            hi += 1
        return list(range(lo, hi + 1))

    def _evaluate(self, fi: int):
        reduced = self.reduced(fi)
        i = self.fit(fi, reduced)
        if i is None:
            return None
        payload = self.payloads[(fi, i)]
        decoded = self.decoded(payload)
        value = self.score(self.image, decoded)
        if fi == self.start:
            self.share = self._downscale_share(reduced, decoded)
        return (value, -len(payload)), payload, ReferenceSetting(fi, self.qualities[fi][i])

    def _downscale_share(self, reduced: np.ndarray, decoded: np.ndarray) -> float:
        """The part of a candidate's squared error that the downscale alone causes (the original
        downscaled and upsampled, uncoded), measured on row bands of about a megapixel in all:
        near 1 the reference lacks pixels, near 0 it lacks bits."""
        rh, rw = reduced.shape[:2]
        if (rw, rh) == (self.w, self.h):
            return 0.0
        band = 32
        count = max(1, min(-(-self.h // band), (1 << 20) // (band * self.w)))
        starts = sorted({min(self.h - band, (k * self.h) // count) if self.h > band else 0 for k in range(count)})
        source = Image.fromarray(reduced)
        down = coded = 0
        for y0 in starts:
            y1 = min(self.h, y0 + band)
            up = np.asarray(source.resize((self.w, y1 - y0), Image.Resampling.LANCZOS,
                                          box=(0, y0 * rh / self.h, rw, y1 * rh / self.h)))
            ref = self.image[y0:y1].astype(np.int64)
            down += int(np.square(ref - up).sum())
            coded += int(np.square(ref - decoded[y0:y1]).sum())
        return down / coded if coded else 1.0

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
        if self.sweep:
            return self._sweep()
        p = self._start()
        if p is None:
            return None
        best, step = self._first_move(p)
        return self.result(self._climb(best, step))

    def _sweep(self):
        """Every factor scored, smallest reduced size first (so the rate model learns as it goes):
        the evaluation's baselines, where a fair best matters more than time and a codec's score
        against the factor may have several peaks (libjxl's did: the climb stopped early)."""
        self.start = self.factors[0] if self.factors else None
        for k in range(len(self.factors)):
            self.evaluate([k])
        found = [self.result(k) for k in range(len(self.factors)) if self.result(k) is not None]
        return max(found, key=lambda r: r[0]) if found else None

    def _start(self) -> int | None:
        """The position whose bits per pixel are nearest the start rate, or the first smaller size
        below it that fits; None when nothing down to the smallest size fits."""
        bits = [8 * self.max_bytes / self.pixels[fi] for fi in self.factors]
        p = min(range(len(self.factors)), key=lambda k: abs(math.log(bits[k] / START_BITS_PER_PIXEL)))
        self.start = self.factors[p]
        self.evaluate([p])
        while self.result(p) is None:  # a start that does not fit: smaller sizes until one does
            if p == 0:
                return None
            p -= 1
            self.start = self.factors[p]
            self.evaluate([p])
        return p

    def _first_move(self, p: int) -> tuple[int, int]:
        """(best position, direction that improved, 0 for none) after the first look around p.

        Which side first: when the downscale causes little of the start's error, the reference
        has pixels to spare and smaller sizes (more bits per pixel) tend to win; when it causes
        most of it, larger sizes. Otherwise both neighbours at once."""
        best, step = p, 0
        first = -1 if self.share < _SHARE_SMALLER else 1 if self.share > _SHARE_LARGER else 0
        if first:
            sides = self._ahead(p, first)
            better = [k for k in sides if self._beats(k, best)]
            if better:
                return max(better, key=lambda k: self.result(k)[0]), first
            for k in self._ahead(p, -first):  # the other side, one factor past a worse one
                if self._beats(k, best):
                    return k, -first
            return best, step
        # the two neighbours at once; when neither improves, the next two (PSNR against the
        # factor is not always unimodal: a worse factor can sit between two better ones)
        for reach in (1, 2):
            sides = [k for k in (p + reach, p - reach) if 0 <= k < len(self.factors)
                     and not (k > p + 1 and self.result(p + 1) is None)]  # above a size that does not fit
            self.evaluate(sides)
            better = [k for k in sides if self._beats(k, best)]
            if better:
                best = max(better, key=lambda k: self.result(k)[0])
                return best, 1 if best > p else -1
        return best, step

    def _climb(self, best: int, step: int) -> int:
        """On along the side that improved, looking one factor past a worse one; the best position."""
        while step:
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
        return best

    def _ahead(self, p: int, step: int) -> list[int]:
        """Evaluate the next two factors from p on one side (smaller sizes: at once; larger ones:
        one by one, none above a size that does not fit); the positions evaluated."""
        ahead = [k for k in (p + step, p + 2 * step) if 0 <= k < len(self.factors)]
        if step < 0:
            self.evaluate(ahead)
            return ahead
        done = []
        for k in ahead:
            self.evaluate([k])
            done.append(k)
            if self.result(k) is None:
                break
        return done

    def _beats(self, k: int, best: int) -> bool:
        return self.result(k) is not None and self.result(k)[0] > self.result(best)[0]


def encode_reference(image, max_bytes: int, codec: ReferenceCodec, metric: str = "psnr", progress=None,
                     sweep: bool = False):
    """Best payload of at most max_bytes, with its setting.

    Searches factors x qualities (_Search): per factor the highest quality that fits (assuming
    the payload grows with quality and with size), each factor's candidate decoded exactly as a
    decoder would (payload -> full size) and scored against the image with `metric` ("psnr" or
    "ms-ssim"); the best score wins, ties going to the smaller payload. progress(text), when
    given, hears of every factor scored. `sweep` scores every factor instead of climbing (the
    evaluation's baselines: the best over all factors, at several times the time). A plain
    AvifCodec's result is then refined (sedic.streams.reference_refine: final encodes at aom
    speed 2, the reduced size grown to fill the budget, explicit size index 15 when it is not a
    factor's), never scoring lower.
    """
    image = _check_image(image)
    if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise InputError("max_bytes must be a positive integer")
    if metric not in _METRICS:
        raise InputError(f"unknown metric {metric!r} (known: {', '.join(_METRICS)})")
    best = _Search(image, int(max_bytes), codec, _METRICS[metric], progress, sweep=sweep).run()
    if best is None:
        h, w = image.shape[:2]
        raise RateError(f"no reference setting fits in {max_bytes} bytes for a {w}x{h} image")
    return _refine.refine_reference(image, int(max_bytes), codec, best[1], best[2], _METRICS[metric], progress)
