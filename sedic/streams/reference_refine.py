"""Encoder-only refinement of the AVIF reference after the rate search (issue 15, part 3).

The search (sedic.streams.reference._Search) picks a downscale factor and the highest quality
that fits, encoding at aom speed 6. At the low qualities a 0.02-0.03 bpp reference uses, one
quality step changes the payload by 5-20 %, so the search's payload often leaves tens of bytes
of the budget unused. Refinement spends a few more encodes around that choice:

1. the final encodes run at aom `FINAL_SPEED` (2) instead of 6: better frames at the same
   quality (on these tiny images, 256x171 at factor 3 for Kodak, an encode takes ~0.1-0.5 s);
2. the quality is re-fitted at that speed at the chosen factor, then, for each quality in a
   window around it, the reduced size is grown or shrunk until the payload fills the budget,
   sent with the explicit-size index 15 (2-4 bytes of header; every decoder reads it);
3. the quality is re-fitted at that speed at the neighbouring factors' sizes too (NEIGHBOURS),
   each giving one more candidate at its quality;
4. the winner's quality and aspect are coded again from slightly blurred originals
   (PREFILTER_SIGMAS: a Gaussian of 0.1-0.3 reduced pixels before the Lanczos downscale; the
   downscale is the encoder's choice, not normative), each size filled to the budget again.

Every candidate is decoded exactly as a decoder does and scored with the search's metric; the
best wins, ties to the smaller payload, and the search's own payload stays unless beaten. So the
result never scores lower and never exceeds the budget. Nothing here changes the payload format
or the decoder. Measured in docs/reference-stream.md ("Refinement").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFilter

FINAL_SPEED = 2
QUALITY_WINDOW = (-2, -1, 0, 1, 2)
# the neighbouring factors (index offsets) whose quality is re-fitted at FINAL_SPEED too; each
# adds one candidate (its fitted quality, the size filled from that factor's size): +0.016 /
# +0.026 dB mean on Kodak at 0.02 / 0.03 bpp for about +70 % refinement CPU
# (docs/reference-stream.md, "Round 2"); () turns the step off
NEIGHBOURS: tuple[int, ...] = (-1, 1)
# the blurs (Gaussian sigma in reduced pixels) of the original whose downscales are coded at the
# winner's quality and aspect (step 4: "Round 3" in docs/reference-stream.md); () turns it off
PREFILTER_SIGMAS: tuple[float, ...] = (0.1, 0.2, 0.3)
# Refinement is skipped above these sizes (reduced pixels, original pixels; 2^18 admits factor
# 3/2 on Kodak, 512x341, where it gained most): above them a speed-2
# encode of the reduced image and the full-size scoring of every candidate would cost seconds
# each (12 MP at 0.03 bpp codes a ~1400x940 reference). On Kodak only factor 1 (0.05 bpp and up)
# is above them.
MAX_REDUCED_PIXELS = 1 << 18
MAX_PIXELS = 1 << 22
# log(bytes) grows about 1.6 x log(reduced width) at a fixed quality (0.8 per log pixels)
_BYTES_PER_WIDTH_EXPONENT = 1.6


def lanczos_down(image: np.ndarray, rw: int, rh: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (rw, rh) == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.LANCZOS))


def prefiltered(image: np.ndarray, sigma: float, rw: int) -> np.ndarray:
    """The image blurred by a Gaussian of `sigma` reduced pixels (a reduced width of rw), the
    source of a pre-filtered downscale."""
    radius = sigma * image.shape[1] / rw
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def fit_quality(qualities, fits, start):
    """Index of the highest quality for which fits(index) holds, assuming it holds up to some
    index and not above: steps of 1, 2, 4, ... from the quality nearest `start` until the bracket
    closes, then halving. None when not even the lowest fits."""
    n = len(qualities)
    k = min(range(n), key=lambda i: (abs(qualities[i] - start), i))
    lo, hi = -1, n  # lo fits (or -1), hi does not (or n)
    step = 1
    if fits(k):
        lo = k
        while hi == n and lo < n - 1:
            k = min(n - 1, lo + step)
            if fits(k):
                lo = k
            else:
                hi = k
            step *= 2
    else:
        hi = k
        while lo < 0 < hi:
            k = max(0, hi - step)
            if fits(k):
                lo = k
            else:
                hi = k
            step *= 2
    if lo < 0:
        return None
    while hi - lo > 1:
        k = (lo + hi) // 2
        if fits(k):
            lo = k
        else:
            hi = k
    return lo


def sized(width: int, height: int, rw: int, rh: int, sw: int) -> tuple[int, int]:
    """The reduced size of width sw with the aspect of rw x rh, each side within 16..the image's."""
    lo_w, lo_h = min(width, 16), min(height, 16)
    return min(width, max(lo_w, sw)), min(height, max(lo_h, round(sw * rh / rw)))


def fill_width(size_of, width: int, height: int, rw: int, rh: int, max_bytes: int, probes: int = 6):
    """The largest reduced width sw (the aspect of rw x rh) whose size_of(sw) <= max_bytes found
    in at most `probes` calls: secant steps on log(bytes) ~ 1.6 log(width) from rw, halving once
    bracketed. Returns the largest fitting width probed, or None when none fitted."""
    got: dict[int, int] = {}
    lo = hi = None  # widest that fits / narrowest that does not
    sw = sized(width, height, rw, rh, rw)[0]
    for _ in range(probes):
        if sw in got:
            break
        n = got[sw] = size_of(sw)
        if n <= max_bytes:
            lo = sw if lo is None else max(lo, sw)
        else:
            hi = sw if hi is None else min(hi, sw)
        if lo is not None and hi is not None:
            if hi - lo <= 1:
                break
            guess = round(sw * (max_bytes / n) ** (1 / _BYTES_PER_WIDTH_EXPONENT))
            sw = guess if lo < guess < hi else (lo + hi) // 2
        else:
            guess = round(sw * (max_bytes / n) ** (1 / _BYTES_PER_WIDTH_EXPONENT))
            sw = max(guess, sw + 1) if n <= max_bytes else min(guess, sw - 1)
            sw = sized(width, height, rw, rh, sw)[0]
    return lo


def _refinable(codec, w: int, h: int, fi: int) -> tuple[int, int] | None:
    """The reduced size when the search's result is one the refinement applies to, else None."""
    from sedic.streams import reference as R

    if type(codec) is not R.AvifCodec or codec.effort < 1 or not 0 <= fi < len(R.FACTORS):
        return None
    rw, rh = R.reduced_size(w, h, fi)
    if rw * rh > MAX_REDUCED_PIXELS or w * h > MAX_PIXELS:
        return None
    return rw, rh


def _best(search, found):
    """The best of the search's (score, payload, setting) and the candidates (None: no fit), taken
    in quality order so that the result does not depend on thread timing."""
    best = search
    for c in found:
        if c is not None and c[0] > best[0]:
            best = c
    return best


def _neighbour_sizes(w: int, h: int, fi: int, neighbours) -> list[tuple[int, int]]:
    """The reduced sizes of the factors at these index offsets from fi that the refinement may
    code (within FACTORS and MAX_REDUCED_PIXELS), nearest first, without repeats."""
    from sedic.streams import reference as R

    out: list[tuple[int, int]] = []
    own = R.reduced_size(w, h, fi)
    for d in neighbours:
        if 0 <= fi + d < len(R.FACTORS):
            size = R.reduced_size(w, h, fi + d)
            if size != own and size not in out and size[0] * size[1] <= MAX_REDUCED_PIXELS:
                out.append(size)
    return out


def _jobs(qualities, q0: int, window, own: tuple[int, int], others, fitted,
          quantizer=None) -> list[tuple[int, int, int]]:
    """The candidates (quality, base width, base height): the window around q0 at the search's
    size, one quality per quantiser (qualities sharing one give the same payload, so a second
    would repeat every encode of the first), then each other size's fitted(width, height,
    start) quality unless already there."""
    todo: list[tuple[int, int, int]] = []
    seen = set()
    for q in (q0 + d for d in window if q0 + d in qualities):
        key = q if quantizer is None else quantizer(q)
        if key not in seen:
            seen.add(key)
            todo.append((q, *own))
    for bw, bh in others:
        qn = fitted(bw, bh, q0)
        if qn is not None and qn not in [t[0] for t in todo]:
            todo.append((qn, bw, bh))
    return todo


class _Encoder:
    """encode(sw, sh, q): the payload of the image downscaled to sw x sh at quality q, each
    (size, AV1 quantiser) encoded once (qualities that share a quantiser give the same payload;
    the window, the quality fit and the size fill ask for the same ones again)."""

    def __init__(self, codec, image: np.ndarray, downs: dict, index_of: dict):
        self.codec, self.image, self.downs, self.index_of = codec, image, downs, index_of
        self.coded: dict[tuple[int, int, int], bytes] = {}

    def __call__(self, sw: int, sh: int, q: int) -> bytes:
        from sedic.streams import reference as R

        key = (sw, sh, self.codec.quantizer(q))
        if key not in self.coded:
            if (sw, sh) not in self.downs:
                self.downs[(sw, sh)] = lanczos_down(self.image, sw, sh)
            setting = R.ReferenceSetting(self.index_of.get((sw, sh), R.EXPLICIT_SIZE), q)
            self.coded[key] = self.codec.encode_reduced(self.downs[(sw, sh)], setting)
        return self.coded[key]


def _candidate(encode, w: int, h: int, q: int, bw: int, bh: int, max_bytes: int, probes: int = 6):
    """The payload at quality q whose reduced size (the aspect of bw x bh, filled from bw) fills
    the budget, with its size; None when none fits."""
    payloads: dict[int, bytes] = {}

    def size_of(sw: int) -> int:
        payloads[sw] = encode(*sized(w, h, bw, bh, sw), q)
        return len(payloads[sw])

    sw = fill_width(size_of, w, h, bw, bh, max_bytes, probes)
    return None if sw is None else (payloads[sw], sized(w, h, bw, bh, sw))


def refine_reference(image: np.ndarray, max_bytes: int, codec, payload: bytes, setting, score,
                     progress=None, speed: int = FINAL_SPEED, window=QUALITY_WINDOW, threads: int = 2,
                     neighbours=None, sigmas=None):
    """The search's (payload, setting) or a better-scoring payload within max_bytes.

    Only for a plain AvifCodec (the class itself: a subclass may encode differently, and other
    codecs have no speed) of effort 1 or 2 and images within MAX_PIXELS / MAX_REDUCED_PIXELS;
    otherwise the input is returned. `neighbours` and `sigmas` default to NEIGHBOURS and
    PREFILTER_SIGMAS at effort 2 and to () at effort 1. The returned setting's factor_index is
    EXPLICIT_SIZE (15) when the size is explicit (then `.factor` does not apply; the size is in
    the payload)."""
    from sedic.streams import reference as R

    h, w = image.shape[:2]
    fi = setting.factor_index
    reduced = _refinable(codec, w, h, fi)
    if reduced is None:
        return payload, setting
    rw, rh = reduced
    full = codec.effort >= 2
    neighbours = (NEIGHBOURS if full else ()) if neighbours is None else neighbours
    sigmas = (PREFILTER_SIGMAS if full else ()) if sigmas is None else sigmas
    slow = R.AvifCodec(speed=speed, tune=codec.tune)
    qualities = codec.qualities()
    downs: dict[tuple[int, int], np.ndarray] = {}
    # a size that is some factor's is sent with that factor's index (no explicit size bytes)
    index_of = {R.reduced_size(w, h, i): i for i in reversed(range(len(R.FACTORS)))}
    index_of[(rw, rh)] = fi

    encode = _Encoder(slow, image, downs, index_of)

    def fitted(sw: int, sh: int, start: int):
        """The highest quality that fits at this size and the slow speed (None: none does)."""
        def fits(k: int) -> bool:
            return len(encode(sw, sh, qualities[k])) <= max_bytes

        k = fit_quality(qualities, fits, start)
        return None if k is None else qualities[k]

    fit0 = fitted(rw, rh, setting.quality)
    q0 = setting.quality if fit0 is None else fit0
    todo = _jobs(qualities, q0, window, (rw, rh), _neighbour_sizes(w, h, fi, neighbours), fitted,
                 getattr(slow, "quantizer", None))
    for _, bw, bh in todo:
        downs[(bw, bh)] = lanczos_down(image, bw, bh)  # before the threads share the cache

    def scored(found, q: int):
        """(score, -bytes), payload, setting of a _candidate result at quality q, or None."""
        if found is None:
            return None
        p, size = found
        chosen = R.ReferenceSetting(index_of.get(size, R.EXPLICIT_SIZE), q)
        return (score(image, slow.decode(p, w, h)), -len(p)), p, chosen

    def window_job(job):
        q, bw, bh = job
        return scored(_candidate(encode, w, h, q, bw, bh, max_bytes), q)

    def prefilter_job(job):
        """The winner's quality and aspect from the original blurred by sigma (its own encodes:
        the downscales differ), filled from the winner's width in at most 4 encodes."""
        sigma, q, bw, bh = job
        blurred = _Encoder(slow, prefiltered(image, sigma, bw), {}, index_of)
        return scored(_candidate(blurred, w, h, q, bw, bh, max_bytes, probes=4), q)

    with ThreadPoolExecutor(max(1, threads)) as pool:  # aom and dav1d release the GIL
        best = _best(((score(image, codec.decode(payload, w, h)), -len(payload)), payload, setting),
                     pool.map(window_job, todo))
        if sigmas:
            _, _, bw, bh, _ = slow.parse(best[1], w, h)
            best = _best(best, pool.map(prefilter_job, [(sg, best[2].quality, bw, bh) for sg in sigmas]))
    if progress is not None and best[1] is not payload:
        _, _, rw2, rh2, _ = slow.parse(best[1], w, h)
        progress(f"reference refined at speed {speed}: {rw2}x{rh2}, quality {best[2].quality}, "
                 f"{len(best[1])} bytes, score {best[0][0]:.3f}")
    return best[1], best[2]
