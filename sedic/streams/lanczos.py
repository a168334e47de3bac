"""The normative upsampling rule of the reference stream: Lanczos-3 in 22-bit fixed point.

This is the arithmetic of Pillow's ``Image.resize(size, Image.LANCZOS)`` on 8-bit RGB (Pillow
11.3 to 13.0, ``src/libImaging/Resample.c``), written out so that a decoded file does not depend
on which Pillow is installed. docs/reference-stream.md states it; tests/test_lanczos.py checks it
against Pillow itself on random sizes. Only the weights involve floating point (IEEE-754 double,
no fused multiply-add); the pixels are integer sums.
"""

from __future__ import annotations

import math

import numpy as np

SUPPORT = 3.0      # Lanczos-3
PRECISION = 22     # fixed-point weight bits: 32 - 8 - 2 (8-bit samples, 2 bits of headroom)
_BAND_PIXELS = 1 << 20  # output pixels per band of the vertical pass: bounds the temporaries


def _lanczos(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) on [-3, 3), 0 elsewhere, sinc(0) = 1, sinc(t) = sin(pi t) / (pi t).

    math.sin (the C library's sin, as in Pillow) rather than np.sin, whose SIMD kernels may differ
    in the last bit; a weight only changes when the value sits within an ulp of a rounding tie.
    """
    flat = x.ravel().tolist()
    out = []
    for v in flat:
        if not -3.0 <= v < 3.0:
            out.append(0.0)
            continue
        a = 1.0 if v == 0.0 else math.sin(v * math.pi) / (v * math.pi)
        t = v / 3
        b = 1.0 if t == 0.0 else math.sin(t * math.pi) / (t * math.pi)
        out.append(a * b)
    return np.asarray(out, dtype=np.float64).reshape(x.shape)


def coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one axis: first source index (out_size,) and integer weights (out_size, ksize).

    Weights past a row's last tap are 0 (and their source index is clamped into the image).
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    xx = np.arange(out_size, dtype=np.float64)
    center = (xx + 0.5) * scale
    # C's (int) cast truncates towards zero; a negative first index is clamped to 0 either way
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    k = np.arange(ksize)
    inside = k[None, :] < xmax[:, None]
    arg = ((k[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * (1.0 / filterscale)
    w = np.where(inside, _lanczos(np.where(inside, arg, 10.0)), 0.0)
    # the normalising sum runs left to right, as in C
    ww = np.zeros(out_size)
    for j in range(ksize):
        ww = ww + w[:, j]
    w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    scaled = w * float(1 << PRECISION)
    # round half away from zero: (int)(x + 0.5) for x >= 0, (int)(x - 0.5) for x < 0
    fixed = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int32)
    return xmin, fixed


def _band_matrix(xmin: np.ndarray, kk: np.ndarray, o0: int, o1: int, n: int) -> tuple[int, int, np.ndarray]:
    """Weights of outputs o0..o1-1 over the inputs lo..hi-1 they read, as a dense
    (o1 - o0, hi - lo + 1) float64 block scaled by 2^-22, with a last column of 1/2 (the
    rounding term) that multiplies a row of ones."""
    ntaps = kk.shape[1]
    lo = int(xmin[o0])
    hi = min(n, int((xmin[o0:o1] + ntaps).max()))
    block = np.zeros((o1 - o0, hi - lo + 1), np.float64)
    rows = np.broadcast_to(np.arange(o1 - o0)[:, None], (o1 - o0, ntaps))
    cols = xmin[o0:o1, None] - lo + np.arange(ntaps)[None, :]
    keep = cols < hi - lo  # the zero weights past a row's last tap may point past the image
    block[rows[keep], cols[keep]] = kk[o0:o1][keep] * (1.0 / (1 << PRECISION))
    block[:, -1] = 0.5
    return lo, hi, block


def _filter_axis0(src: np.ndarray, out_size: int) -> np.ndarray:
    """Resample the rows of a uint8 (n, m) array to (out_size, m).

    Every output is clamp(floor((sum_k w_k s_k + 2^21) / 2^22), 0, 255). The products are exact:
    the sum is an integer below 2^31 (8-bit samples, 22-bit weights, a few taps), so scaled by
    2^-22 it has at most 31 significant bits and float64 adds such terms exactly in any order; a
    BLAS product over a band of outputs therefore gives the integer rule's result on any number
    of threads. Clamping first and then truncating equals flooring first and then clamping.
    """
    n, m = src.shape
    xmin, kk = coefficients(n, out_size)
    out = np.empty((out_size, m), np.uint8)
    band = int(min(256, max(16, 8 * out_size // n)))  # outputs per product
    band = max(1, min(band, _BAND_PIXELS // max(1, m)))
    slab = np.empty((kk.shape[1] + band // max(1, out_size // n) + 8, m), np.float64)
    for o0 in range(0, out_size, band):
        o1 = min(out_size, o0 + band)
        lo, hi, block = _band_matrix(xmin, kk, o0, o1, n)
        k = hi - lo
        if slab.shape[0] < k + 1:
            slab = np.empty((k + 1, m), np.float64)
        slab[:k] = src[lo:hi]
        slab[k] = 1.0
        acc = block @ slab[:k + 1]
        np.clip(acc, 0, 255, out=acc)
        out[o0:o1] = acc  # truncation of values in [0, 255] is the floor
    return out


def _filter_axis1(src: np.ndarray, out_size: int) -> np.ndarray:
    """Resample the columns of a uint8 (h, n, c) image to (h, out_size, c), plane by plane and in
    bands of rows (same arithmetic as _filter_axis0, with the weight blocks transposed)."""
    h, n, c = src.shape
    xmin, kk = coefficients(n, out_size)
    band = int(min(256, max(16, 8 * out_size // n)))
    blocks = [_band_matrix(xmin, kk, o0, min(out_size, o0 + band), n) for o0 in range(0, out_size, band)]
    out = np.empty((h, out_size, c), np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, n + out_size))
    plane = np.empty((min(rows, h), n), np.float64)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        p = plane[:r1 - r0]
        for ch in range(c):
            p[:] = src[r0:r1, :, ch]
            for o0, (lo, hi, block) in zip(range(0, out_size, band), blocks, strict=True):
                acc = p[:, lo:hi] @ block[:, :-1].T
                acc += 0.5
                np.clip(acc, 0, 255, out=acc)
                out[r0:r1, o0:o0 + acc.shape[1], ch] = acc
    return out


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Upsample uint8 (H, W, C) to (height, width, C), height >= H and width >= W.

    Horizontal pass first, then vertical; a pass whose size does not change is skipped; each pass
    rounds and clips to 8 bits. (Only upsampling is defined: Pillow 13 runs the vertical pass
    first when the height shrinks much more than the width, Pillow 12 never does; for growing or
    equal sizes both run the horizontal pass first, as here.)
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError("resize needs a uint8 (H, W, C) array")
    h, w, c = image.shape
    if not (w <= width and h <= height):
        raise ValueError(f"upsampling only: {w}x{h} -> {width}x{height}")
    out = np.ascontiguousarray(image)
    if width != w:
        out = _filter_axis1(out, width)
    if height != h:
        out = _filter_axis0(out.reshape(h, width * c), height).reshape(height, width, c)
    return out if out is not image else image.copy()
