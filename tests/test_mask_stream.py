"""Mask stream: grid rule, lossless round trip, robustness of the decoder, rate against PNG."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from sedic.errors import BitstreamError, InputError
from sedic.streams.masks import decode_masks, encode_masks, grid_shape, to_grid

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "masks"


def roundtrip(grids):
    shape = grids[0].shape if grids else (1, 1)
    data = encode_masks(grids)
    out = decode_masks(data, len(grids), shape)
    assert len(out) == len(grids)
    for a, b in zip(grids, out, strict=True):
        assert b.dtype == np.bool_ and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
    return data


# ------------------------------------------------------------------ grid rule
def test_grid_shape():
    assert grid_shape(768, 512) == (64, 96)
    assert grid_shape(512, 768) == (96, 64)
    assert grid_shape(13, 10) == (2, 2)
    assert grid_shape(1, 1) == (1, 1)
    assert grid_shape(16, 8) == (1, 2)
    assert grid_shape(17, 9) == (2, 3)


def test_to_grid_half_set_full_cell():
    m = np.zeros((8, 8), bool)
    m[:4, :] = True                      # exactly 32 of 64: at least half -> set
    assert to_grid(m).tolist() == [[True]]
    m[0, 0] = False                      # 31 of 64 -> not set
    assert to_grid(m).tolist() == [[False]]


def test_to_grid_edge_cells_count_only_real_pixels():
    # 13 wide x 10 high: cells are 8x8, 5x8 (right), 8x2 (bottom), 5x2 (corner)
    m = np.zeros((10, 13), bool)
    m[0:8, 8:13][:4, :] = True           # right cell: 20 of 40 real pixels -> set
    m[8:10, 0:8][0, :] = True            # bottom cell: 8 of 16 -> set
    m[8:10, 8:13][0, :2] = True          # corner cell: 2 of 10 -> not set
    m[0:8, 0:8][:3, :] = True            # top-left: 24 of 64 -> not set
    g = to_grid(m)
    assert g.shape == (2, 2) and g.dtype == np.bool_
    assert g.tolist() == [[False, True], [True, False]]
    m[8, 10] = True
    m[9, 10:12] = True                   # corner now 5 of 10 -> set
    assert to_grid(m)[1, 1]
    m[9, 11] = False                     # 4 of 10 -> not set
    assert not to_grid(m)[1, 1]


def test_to_grid_one_pixel_and_full():
    assert to_grid(np.ones((1, 1), bool)).tolist() == [[True]]
    assert to_grid(np.zeros((1, 1), bool)).tolist() == [[False]]
    assert to_grid(np.ones((17, 9), bool)).all()


def test_to_grid_rejects_bad_input():
    with pytest.raises(InputError):
        to_grid(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError):
        to_grid(np.zeros((4, 4, 1), bool))
    with pytest.raises(InputError):
        to_grid(np.zeros((0, 4), bool))


def test_encode_rejects_bad_input():
    with pytest.raises(InputError):
        encode_masks([np.zeros((4, 4), bool), np.zeros((4, 5), bool)])
    with pytest.raises(InputError):
        encode_masks([np.zeros((4, 4), np.uint8)])
    with pytest.raises(InputError):
        encode_masks([np.zeros((2, 2, 2), bool)])
    with pytest.raises(InputError):
        encode_masks(np.zeros((1, 4, 4), bool))


# ------------------------------------------------------------------ round trip
def test_zero_masks():
    assert encode_masks([]) == b""
    assert decode_masks(b"", 0, (64, 96)) == []


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (13, 10), (64, 96), (96, 64)])
def test_roundtrip_structured(shape):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    grids = [
        np.zeros(shape, bool),
        np.ones(shape, bool),
        (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 3) ** 2,
        (xx + yy) % 2 == 0,            # checkerboard: worst case for the context model
        xx >= w // 2,
    ]
    for k in range(len(grids) + 1):
        roundtrip(grids[:k])


def test_roundtrip_overlapping_and_identical_masks():
    rng = np.random.default_rng(3)
    a = rng.random((40, 30)) < 0.5
    roundtrip([a, a, a, ~a])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5).flatmap(lambda k: st.tuples(st.integers(1, 20), st.integers(1, 20)).flatmap(
    lambda s: st.lists(hnp.arrays(np.bool_, s), min_size=k, max_size=k))))
def test_roundtrip_hypothesis(grids):
    roundtrip(grids)


def test_roundtrip_random_density():
    rng = np.random.default_rng(7)
    for p in (0.0, 0.01, 0.3, 0.5, 0.99, 1.0):
        roundtrip([rng.random((33, 47)) < p for _ in range(3)])


def test_large_grid_roundtrip():
    """A 256 x 256 grid (a 2048 px image's) with three overlapping masks; its speed is measured in
    benchmarks/mask_rate.py, not asserted here."""
    yy, xx = np.mgrid[:256, :256]
    grids = [(yy - c) ** 2 + (xx - 2 * c // 3) ** 2 < 60 ** 2 for c in (60, 128, 200)]
    roundtrip(grids)


# ------------------------------------------------------------------ robustness
def _sample_stream():
    yy, xx = np.mgrid[:24, :40]
    grids = [(yy - 10) ** 2 + (xx - 12) ** 2 < 49, (xx > 28) & (yy > 5), yy > 18]
    return grids, encode_masks(grids)


def _decode_only_bitstream_errors(data, count, shape):
    try:
        out = decode_masks(data, count, shape)
    except BitstreamError:
        return
    assert len(out) == count
    assert all(g.shape == shape and g.dtype == np.bool_ for g in out)


def test_truncated_streams():
    grids, data = _sample_stream()
    for n in range(len(data)):
        _decode_only_bitstream_errors(data[:n], 3, grids[0].shape)
    _decode_only_bitstream_errors(b"", 3, (200, 300))


def test_mutated_and_random_streams():
    grids, data = _sample_stream()
    rng = np.random.default_rng(11)
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            op = rng.integers(3)
            i = int(rng.integers(len(b) + 1))
            if op == 0 and b:
                b[min(i, len(b) - 1)] ^= 1 << int(rng.integers(8))
            elif op == 1:
                b.insert(i, int(rng.integers(256)))
            elif b:
                del b[min(i, len(b) - 1)]
        _decode_only_bitstream_errors(bytes(b), 3, grids[0].shape)
    for n in (1, 5, 64, 1000):
        _decode_only_bitstream_errors(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), 3, (64, 96))
    # data where none is expected, and a non-canonical trailing zero
    with pytest.raises(BitstreamError):
        decode_masks(b"\x01", 0, (4, 4))
    with pytest.raises(BitstreamError):
        decode_masks(data + b"\x00", 3, grids[0].shape)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 5), st.tuples(st.integers(1, 40), st.integers(1, 40)))
def test_arbitrary_bytes_hypothesis(data, count, shape):
    _decode_only_bitstream_errors(data, count, shape)


# ------------------------------------------------------------------ rate
def _png_bits(grid):
    buf = io.BytesIO()
    Image.fromarray(grid).convert("1").save(buf, format="PNG", optimize=True)
    return 8 * len(buf.getvalue())


def test_rate_against_png_on_benchmark_masks():
    files = sorted(DATA.glob("*.png"))
    assert len(files) >= 24, "benchmark masks missing (python benchmarks/mask_rate.py --regenerate)"
    images: dict[str, list] = {}
    for p in files:
        name, k = p.stem.rsplit("_", 1)
        images.setdefault(name, []).append((int(k), np.asarray(Image.open(p).convert("1"), bool)))
    ours = png = 0
    for name, masks in images.items():
        grids = [to_grid(m) for _, m in sorted(masks, key=lambda t: t[0])]
        o = 8 * len(roundtrip(grids))
        p = sum(_png_bits(g) for g in grids)
        assert o <= 0.35 * p, (name, o, p)   # no single image far off
        ours, png = ours + o, png + p
    assert ours <= 0.25 * png, (ours, png)
