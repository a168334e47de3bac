"""Mask stream: lossless context-adaptive binary arithmetic coding of K object masks on the latent grid.

The normative description (grid rule, context template, probability adaptation, exact coding
procedure) is docs/mask-stream.md; keep the two in sync.  Summary:

* every mask is first reduced to the latent grid (8x8 pixels per cell, majority of real pixels);
* masks are coded in order k = 0..K-1, rows top to bottom, pixels left to right;
* per row one "same as the row above" flag (JBIG typical prediction), then, for a row that
  differs, every cell with a 6-bit context: 5 causal cells of the same mask plus the union of
  the masks already coded at that cell (objects rarely overlap, so a set cell there predicts 0);
* each context owns an adaptive counter pair (n0, n1) with halving, shared by all K masks and
  started from a prior; the probability is an integer q/65536 derived from the counts by integer
  arithmetic, so every machine builds identical models;
* the arithmetic coder is constriction's queue RangeEncoder/RangeDecoder (32-bit words, 64-bit
  state, 24-bit model precision) with Bernoulli(q/65536, perfect=False) models.
"""
from __future__ import annotations

import numpy as np

from sedic.errors import BitstreamError, InputError

CELL = 8  # the latent diffusion model's downsampling factor

# --- probability adaptation -------------------------------------------------------------------
# State of a context = counts (n0, n1), each < LIMIT.  After coding bit b, n_b += 1; when
# n0 + n1 reaches LIMIT both counts are halved (rounding up) so old statistics fade.
# p(1) = (n1 + ALPHA) / (n0 + n1 + 2 * ALPHA), ALPHA = ALPHA_NUM / ALPHA_DEN, rounded to q / 2**16.
LIMIT = 255
ALPHA_NUM, ALPHA_DEN = 1, 4
PBITS = 16


def _build_tables():
    n0 = np.arange(LIMIT * LIMIT) // LIMIT
    n1 = np.arange(LIMIT * LIMIT) % LIMIT
    num = (ALPHA_DEN * n1 + ALPHA_NUM) << (PBITS + 1)
    den = ALPHA_DEN * (n0 + n1) + 2 * ALPHA_NUM
    q = np.clip((num + den) // (2 * den), 1, (1 << PBITS) - 1)  # round half up, keep both symbols codable

    def step(a, b):
        a, b = a.copy(), b.copy()
        over = a + b >= LIMIT
        a[over] = (a[over] + 1) >> 1
        b[over] = (b[over] + 1) >> 1
        return a * LIMIT + b

    nxt0 = step(n0 + 1, n1)
    nxt1 = step(n0, n1 + 1)
    # states with n0 + n1 >= LIMIT are unreachable; their table entries are never used
    return q.astype(np.int64), nxt0.astype(np.int64), nxt1.astype(np.int64)


_Q, _NXT0, _NXT1 = _build_tables()
_Q_LIST, _NXT0_LIST, _NXT1_LIST = _Q.tolist(), _NXT0.tolist(), _NXT1.tolist()

# --- context template -------------------------------------------------------------------------
# Context of a cell (x, y) of mask k: 6 bits.  (dy, dx, bit) are relative to the coded cell and
# read the current mask (cells outside the grid are 0); every one of them is already decoded.
#   bit 0: (y, x-1)  bit 1: (y, x-2)          -- current row, kept in the inner loop
#   bit 2: (y-1, x-1)  bit 3: (y-1, x)  bit 4: (y-1, x+1)
#   bit 5: union of masks 0..k-1 at (y, x)   -- objects rarely overlap, so 1 predicts 0
# Larger JBIG-style templates (10-14 cells) were measured and cost 5-15 % more bits on
# Kodak-size grids: a few thousand cells per mask cannot train 2**10+ contexts (docs/mask-stream.md).
_CUR_ROW = 2
_HMASK = (1 << _CUR_ROW) - 1
_TEMPLATE = [(-1, -1, 2), (-1, 0, 3), (-1, 1, 4)]
_PREV = [(0, 0, 5)]
NCTX = 1 << 6
ROW_CTX = 2  # context of the row flag: value of the previous row's flag


PRIOR_AGREE = 8   # prior weight when all current-mask template cells agree
PRIOR_PREV = 8    # prior weight towards 0 when the cell is set in an earlier mask


def _initial_states() -> list:
    """Initial counter state of every context: a prior from the context bits themselves.

    Learning 2**n contexts from scratch costs more than the few thousand cells of a mask can
    repay, so contexts start biased: a cell inside an earlier object is probably 0, and a cell
    whose causal neighbours all agree probably has their value.  Other contexts start at (0, 0).
    """
    cur_bits = list(range(_CUR_ROW)) + [b for _, _, b in _TEMPLATE]
    prev_bit = [b for dy, dx, b in _PREV if (dy, dx) == (0, 0)]
    out = []
    for c in range(NCTX):
        ones = sum((c >> b) & 1 for b in cur_bits)
        n0 = n1 = 0
        if ones == 0:
            n0 += PRIOR_AGREE
        elif ones == len(cur_bits):
            n1 += PRIOR_AGREE
        if prev_bit and (c >> prev_bit[0]) & 1:
            n0 += PRIOR_PREV
        n0, n1 = min(n0, LIMIT - 1), min(n1, LIMIT - 1 - n0)
        out.append(n0 * LIMIT + n1)
    return out


def grid_shape(width: int, height: int) -> tuple[int, int]:
    """Latent grid of a width x height image: (rows, columns)."""
    return (-(-int(height) // CELL), -(-int(width) // CELL))


def to_grid(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) -> bool (ceil(H/8), ceil(W/8)); a cell is set when at least half of its real pixels are."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise InputError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    if mask.dtype != np.bool_:
        raise InputError(f"mask must be bool, got {mask.dtype}")
    h, w = mask.shape
    gh, gw = grid_shape(w, h)
    pad = np.zeros((gh * CELL, gw * CELL), np.uint8)
    pad[:h, :w] = mask
    ones = pad.reshape(gh, CELL, gw, CELL).sum(axis=(1, 3), dtype=np.int32)
    # real pixels per cell: full cells have 64, the last row/column of cells fewer
    rows = np.minimum(CELL, h - CELL * np.arange(gh))
    cols = np.minimum(CELL, w - CELL * np.arange(gw))
    real = rows[:, None] * cols[None, :]
    return 2 * ones >= real


def _check_grids(grids) -> None:
    if not isinstance(grids, (list, tuple)):
        raise InputError("grids must be a list of 2-D bool arrays")
    shape: tuple[int, ...] | None = None
    for g in grids:
        if not isinstance(g, np.ndarray) or g.ndim != 2 or g.dtype != np.bool_:
            raise InputError("every grid must be a 2-D numpy bool array")
        if g.shape[0] < 1 or g.shape[1] < 1:
            raise InputError(f"empty grid shape {g.shape}")
        if shape is None:
            shape = g.shape
        elif g.shape != shape:
            raise InputError(f"grids differ in shape: {shape} vs {g.shape}")


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = a[y + dy, x + dx], 0 outside the grid."""
    h, w = a.shape
    out = np.zeros_like(a)
    ys, yd = max(0, dy), max(0, -dy)
    xs, xd = max(0, dx), max(0, -dx)
    out[yd:h - ys if ys else h, xd:w - xs if xs else w] = a[ys:h - yd if yd else h, xs:w - xd if xd else w]
    return out


def _prev_context(union: np.ndarray) -> np.ndarray:
    u = union.astype(np.int64)
    ctx = np.zeros(u.shape, np.int64)
    for dy, dx, bit in _PREV:
        ctx |= _shifted(u, dy, dx) << bit
    return ctx


def _row_base(grid_rows: np.ndarray, y: int, prev_ctx_row: np.ndarray) -> list:
    """Context bits of row y that come from rows y-1, y-2 of the current mask and the previous masks.

    grid_rows: int64 array (h + 2, w + 4) of the current mask with 2 zero rows on top and 2 zero
    columns each side; row y of the mask is grid_rows[y + 2, 2:w + 2].
    """
    w = prev_ctx_row.shape[0]
    base = prev_ctx_row.copy()
    for dy, dx, bit in _TEMPLATE:
        base |= grid_rows[y + 2 + dy, 2 + dx:2 + dx + w] << bit
    return base.tolist()


def _encoder_symbols(grids):
    """Yield the (bits, q) sequence that the coder sends, mirroring the decoder exactly."""
    h, w = grids[0].shape
    union = np.zeros((h, w), bool)
    bits: list = []
    qs: list = []
    q_tab, nx0, nx1 = _Q_LIST, _NXT0_LIST, _NXT1_LIST
    state = _initial_states()
    row_state = [0] * ROW_CTX
    for g in grids:
        pc = _prev_context(union)
        padded = np.zeros((h + 2, w + 4), np.int64)
        padded[2:, 2:w + 2] = g
        prev_flag = 0
        for y in range(h):
            same = bool(np.array_equal(padded[y + 2], padded[y + 1]))
            s = row_state[prev_flag]
            qs.append(q_tab[s])
            bits.append(int(same))
            row_state[prev_flag] = nx1[s] if same else nx0[s]
            prev_flag = int(same)
            if same:
                continue
            base = _row_base(padded, y, pc[y])
            row = padded[y + 2, 2:w + 2].tolist()
            hist = 0
            for x in range(w):
                c = base[x] | hist
                s = state[c]
                b = row[x]
                qs.append(q_tab[s])
                bits.append(b)
                state[c] = nx1[s] if b else nx0[s]
                hist = ((hist << 1) | b) & _HMASK
        union |= g
    return bits, qs


def encode_masks(grids: list[np.ndarray]) -> bytes:
    """Lossless code of K same-shape bool grids (in order).  No grids -> b''."""
    import constriction

    if len(grids) == 0:
        _check_grids(grids)
        return b""
    _check_grids(grids)
    bits, qs = _encoder_symbols(list(grids))
    p = np.asarray(qs, np.float64) / (1 << PBITS)  # exact: q < 2**16
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(np.asarray(bits, np.int32), constriction.stream.model.Bernoulli(perfect=False), p)
    words = enc.get_compressed().astype(">u4").tobytes()  # big-endian words
    return words.rstrip(b"\x00")  # the decoder re-pads with zero bytes; see docs


def decode_masks(data: bytes, count: int, shape: tuple[int, int]) -> list[np.ndarray]:
    """Inverse of encode_masks; count and shape come from the container (already range-checked)."""
    import constriction

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("mask stream: data must be bytes")
    if count == 0:
        if len(data):
            raise BitstreamError("mask stream: data present but no masks expected")
        return []
    h, w = int(shape[0]), int(shape[1])
    if count < 0 or h < 1 or w < 1:
        raise BitstreamError(f"mask stream: invalid count {count} or shape {shape}")
    data = bytes(data)
    if len(data) and data[-1] == 0:
        raise BitstreamError("mask stream: non-canonical data (trailing zero byte)")
    # the encoder stripped trailing zero bytes: read as if the stream went on with zeros
    data = data + b"\x00" * (-len(data) % 4 + 8)
    words = np.frombuffer(data, ">u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
    except Exception as e:  # noqa: BLE001 -- any failure of the coder means bad data
        raise BitstreamError(f"mask stream: cannot start range decoder ({e})") from None
    models: dict = {}
    bern = constriction.stream.model.Bernoulli
    q_tab, nx0, nx1 = _Q_LIST, _NXT0_LIST, _NXT1_LIST

    def model(s):
        q = q_tab[s]
        m = models.get(q)
        if m is None:
            m = models[q] = bern(q / (1 << PBITS), perfect=False)
        return m

    union = np.zeros((h, w), bool)
    out = []
    try:
        state = _initial_states()
        row_state = [0] * ROW_CTX
        for _ in range(count):
            pc = _prev_context(union)
            padded = np.zeros((h + 2, w + 4), np.int64)
            prev_flag = 0
            decode = dec.decode
            for y in range(h):
                s = row_state[prev_flag]
                same = decode(model(s))
                row_state[prev_flag] = nx1[s] if same else nx0[s]
                prev_flag = same
                if same:
                    padded[y + 2] = padded[y + 1]
                    continue
                base = _row_base(padded, y, pc[y])
                row = [0] * w
                hist = 0
                for x in range(w):
                    c = base[x] | hist
                    s = state[c]
                    m = models.get(q_tab[s])
                    if m is None:
                        m = model(s)
                    b = decode(m)
                    row[x] = b
                    state[c] = nx1[s] if b else nx0[s]
                    hist = ((hist << 1) | b) & _HMASK
                padded[y + 2, 2:w + 2] = row
            g = padded[2:, 2:w + 2].astype(bool)
            out.append(g)
            union |= g
    except BitstreamError:
        raise
    except Exception as e:  # noqa: BLE001 -- constriction reports corrupt data as various errors
        raise BitstreamError(f"mask stream: corrupt data ({e})") from None
    # Bytes past what the last symbol needs would otherwise be ignored: accept exactly the
    # encoder's output, as the text stream does, so one set of masks has one valid stream.
    if encode_masks(out) != data.rstrip(b"\x00"):
        raise BitstreamError("mask stream: trailing or non-canonical data")
    return out
