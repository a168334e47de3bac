"""A second reader of the text and mask streams, written from docs/text-stream.md ("Entropy coder",
"Static tables", "Coding procedure") and docs/mask-stream.md alone: plain Python integers, no
constriction and no sedic code. tests/test_spec_reader.py runs it on the conformance vectors, so
a spec that no longer says what sedic does (or a constriction that no longer does what the spec
says) fails there.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

M64 = (1 << 64) - 1
P = 24


class RangeDecoder:
    def __init__(self, data: bytes):
        data = bytes(data) + b"\x00" * (-len(data) % 4)
        self.words = [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4)]
        self.pos = 0
        first = [self._next() for _ in range(2)] if len(self.words) >= 2 else None
        if first is not None:
            self.point = first[0] << 32 | first[1]
        elif self.words:
            self.point = self._next() << 32
        else:
            self.point = 0
        self.lower, self.range = 0, M64

    def _next(self) -> int:
        if self.pos < len(self.words):
            self.pos += 1
            return self.words[self.pos - 1]
        return 0

    def decode(self, cdf: list[int]) -> int:
        """cdf: n + 1 integers from 0 to 2^24."""
        scale = self.range >> P
        q = ((self.point - self.lower) & M64) // scale
        if q >= 1 << P:
            raise ValueError("invalid data")
        lo, hi = 0, len(cdf) - 1  # largest s with cdf[s] <= q
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdf[mid] <= q:
                lo = mid
            else:
                hi = mid
        s = lo
        self.lower = (self.lower + scale * cdf[s]) & M64
        self.range = scale * (cdf[s + 1] - cdf[s])
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & M64
            self.range <<= 32
            self.point = ((self.point << 32) & M64) | self._next()
        return s

    def maybe_exhausted(self) -> bool:
        return self.pos >= len(self.words) and (
            self.range == M64 or ((self.point - self.lower) & M64) < (1 << 33) - 1)


def uniform(n: int) -> list[int]:
    w = (1 << P) // n
    return [s * w for s in range(n)] + [1 << P]


def categorical(counts) -> list[int]:
    n = len(counts)
    total = 0.0
    for c in counts:
        total += float(c)
    k = float((1 << P) - n) / total
    cdf, acc = [], 0.0
    for i, c in enumerate(counts):
        cdf.append(int(acc * k) + i)
        acc += float(c)
    return cdf + [1 << P]


# ---------------------------------------------------------------- masks (docs/mask-stream.md)

def decode_masks(data: bytes, count: int, h: int, w: int) -> list[np.ndarray]:
    if count == 0:
        return []
    dec = RangeDecoder(data)

    def prob1(n0, n1):
        den = 4 * (n0 + n1) + 2
        q = ((4 * n1 + 1) * 2 ** 17 + den) // (2 * den)
        return min(max(q, 1), 65535)

    def bit(state):
        n0, n1 = state
        q = prob1(n0, n1)
        w0 = (65536 - q) * (2 ** 24 - 2) // 65536 + 1
        b = dec.decode([0, w0, 1 << P])
        if b:
            n1 += 1
        else:
            n0 += 1
        if n0 + n1 >= 255:
            n0, n1 = (n0 + 1) >> 1, (n1 + 1) >> 1
        return b, [n0, n1]

    cells = []
    for c in range(64):
        n0 = n1 = 0
        low = c & 31
        if low == 0:
            n0 += 8
        if low == 31:
            n1 += 8
        if c & 32:
            n0 += 8
        cells.append([n0, n1])
    rows = [[0, 0], [0, 0]]
    union = np.zeros((h, w), bool)
    out = []
    for _ in range(count):
        g = np.zeros((h, w), bool)

        def m(y, x, g=g):  # bound now: the closure belongs to this object's grid
            return int(0 <= y < h and 0 <= x < w and g[y, x])

        flag = 0
        for y in range(h):
            same, rows[flag] = bit(rows[flag])
            flag = same
            if same:
                g[y] = g[y - 1] if y else False
                continue
            for x in range(w):
                c = (m(y, x - 1) + 2 * m(y, x - 2) + 4 * m(y - 1, x - 1) + 8 * m(y - 1, x)
                     + 16 * m(y - 1, x + 1) + 32 * int(union[y, x]))
                g[y, x], cells[c] = bit(cells[c])
        out.append(g)
        union |= g
    return out


# ---------------------------------------------------------------- text (docs/text-stream.md)

def load_tables(npz_bytes: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(npz_bytes)) as z:
        arr = {name[:-4]: np.load(io.BytesIO(z.read(name)), allow_pickle=False) for name in z.namelist()}
    seps = []
    for tok in bytes(arr["sep_strings"]).split(b"\x00"):
        final = tok.endswith(b"\x01")
        seps.append((tok.rstrip(b"\x01").decode("ascii"), final))
    return {"words": bytes(arr["words"]).decode("ascii").split("\n"),
            "word_counts": [int(c) for c in arr["word_counts"]], "esc": int(arr["esc_count"][0]),
            "char_counts": arr["char_counts"].astype(np.int64), "seps": seps,
            "sep_counts": [int(c) for c in arr["sep_counts"]]}


HEAVY = [0x20, 0x2C, 0x2E, 0x2D, 0x3B, 0x3A, 0x27, 0x28, 0x29, 0x2F, 0x26, 0x25, 0x2B, 0x22] + list(range(0x30, 0x3A))


def decode_strings(data: bytes, t: dict) -> list[str]:
    dec = RangeDecoder(data)
    words, V = t["words"], len(t["words"])
    index = {wd: k for k, wd in enumerate(words)}
    sep_model = [1] * 97
    sep_model[0] = 8
    for cp in HEAVY:
        sep_model[cp - 31] = 8
    sep_model[96] = 4
    cache: dict[str, int] = {}
    spelled: list[str] = []
    pos = 0
    seps = list(t["seps"])
    sep_counts = [[1 + 2 * c for c in t["sep_counts"]] for _ in range(3)]
    start = [[8, 1, 1] for _ in range(3)]

    def word() -> str:
        nonlocal pos
        counts = t["word_counts"] + [t["esc"]] + [0] * len(spelled)
        for wd, n in cache.items():
            k = index[wd] if wd in index else V + 1 + spelled.index(wd)
            counts[k] += (n << 24) // (256 + pos)
        s = dec.decode(categorical(counts))
        if s == V:
            a = b = 0
            letters = []
            while True:
                c = dec.decode(categorical([int(v) for v in t["char_counts"][a, b]]))
                if c == 0:
                    break
                letters.append(chr(96 + c))
                a, b = b, c
            wd = "".join(letters)
            spelled.append(wd)
        elif s < V:
            wd = words[s]
        else:
            wd = spelled[s - V - 1]
        cache[wd] = cache.get(wd, 0) + 1
        pos += 1
        return wd

    def sep(st: int) -> tuple[str, bool]:
        j = dec.decode(categorical(sep_counts[st] + [2]))
        if j == len(seps):
            chars = []
            while True:
                c = dec.decode(categorical(sep_model))
                if c == 0:
                    break
                if c == 96:
                    hi = dec.decode(uniform(544))
                    lo = dec.decode(uniform(2048))
                    chars.append(chr(hi << 11 | lo))
                else:
                    chars.append(chr(c + 31))
            final = dec.decode(categorical([1, 1])) == 1
            seps.append(("".join(chars), final))
            for counts in sep_counts:
                counts.append(1)
        sep_counts[st][j] += 2
        return seps[j]

    out = []
    for i in range(dec.decode(uniform(66))):
        st = 0 if i == 0 else (1 if i % 2 else 2)
        first = dec.decode(categorical(start[st]))
        start[st][first] += 1
        if first == 1:
            out.append("")
            continue
        parts = []
        if first == 2:
            s, final = sep(st)
            parts.append(s)
            if final:
                out.append("".join(parts))
                continue
        while True:
            parts.append(word())
            s, final = sep(st)
            parts.append(s)
            if final:
                break
        out.append("".join(parts))
    if not dec.maybe_exhausted():
        raise ValueError("trailing data")
    return out


# ---------------------------------------------------------------- upsampling (docs/reference-stream.md)

def _taps(n: int, m: int, i: int) -> tuple[int, list[int]]:
    import math

    scale = n / m
    center = (i + 0.5) * scale
    first = max(0, math.trunc(center - 3 + 0.5))
    last = min(n, math.trunc(center + 3 + 0.5))

    def sinc(y):
        return 1.0 if y == 0 else math.sin(y * math.pi) / (y * math.pi)

    def lanczos(x):
        return sinc(x) * sinc(x / 3) if -3 <= x < 3 else 0.0

    ws = [lanczos(float(first + t) - center + 0.5) for t in range(last - first)]
    total = 0.0
    for v in ws:
        total += v
    if total != 0:
        ws = [v / total for v in ws]
    return first, [math.trunc(v * 2 ** 22 + 0.5) if v >= 0 else math.trunc(v * 2 ** 22 - 0.5) for v in ws]


def _pass(line: list[int], m: int) -> list[int]:
    out = []
    for i in range(m):
        first, ws = _taps(len(line), m, i)
        acc = 2 ** 21 + sum(wt * line[first + t] for t, wt in enumerate(ws))
        out.append(min(255, max(0, acc >> 22)))
    return out


def upsample(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rows first, then columns, each channel alone; a pass of unchanged size is skipped."""
    h, w, c = img.shape
    rows = [[list(img[y, :, ch]) for ch in range(c)] for y in range(h)]
    if width != w:
        rows = [[_pass([int(v) for v in r[ch]], width) for ch in range(c)] for r in rows]
    out = np.zeros((height, width, c), np.uint8)
    for x in range(width):
        for ch in range(c):
            col = [int(rows[y][ch][x]) for y in range(h)]
            out[:, x, ch] = _pass(col, height) if height != h else col
    return out


# ---------------------------------------------------------------- YUV to RGB (docs/reference-stream.md)

def _L(s):
    n = len(s)
    out = [0] * (2 * n)
    out[0], out[-1] = s[0], s[-1]
    for i in range(n - 1):
        out[2 * i + 1] = (3 * s[i] + s[i + 1] + 2) >> 2
        out[2 * i + 2] = (s[i] + 3 * s[i + 1] + 2) >> 2
    return out


def _B(a, b):
    n = len(a)
    out = [0] * (2 * n)
    out[0] = (3 * a[0] + b[0] + 2) >> 2
    out[-1] = (3 * a[-1] + b[-1] + 2) >> 2
    for i in range(n - 1):
        out[2 * i + 1] = (9 * a[i] + 3 * a[i + 1] + 3 * b[i] + b[i + 1] + 8) >> 4
        out[2 * i + 2] = (3 * a[i] + 9 * a[i + 1] + b[i] + 3 * b[i + 1] + 8) >> 4
    return out


def _chroma(c: np.ndarray, h: int, w: int) -> np.ndarray:
    c = [[int(v) for v in row] for row in c]
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        if y == 0:
            row = _L(c[0])
        elif y == h - 1 and h % 2 == 0:
            row = _L(c[-1])
        else:
            k = (y - 1) // 2
            row = _B(c[k], c[k + 1]) if y % 2 else _B(c[k + 1], c[k])
        kept = row[:w]
        if w % 2:
            kept[-1] = row[-1]
        out[y] = kept
    return out


def yuv420_to_rgb(Y: np.ndarray, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    h, w = Y.shape
    u = _chroma(U, h, w) - 128
    v = _chroma(V, h, w) - 128
    y1 = (Y.astype(np.int64) * 257 * 16320) >> 16
    r = (y1 + 90 * v + 32) >> 6
    g = (y1 - 22 * u - 46 * v + 32) >> 6
    b = (y1 + 113 * u + 32) >> 6
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)
