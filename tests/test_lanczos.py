"""The normative upsampler (sedic.streams.lanczos) is Pillow's LANCZOS enlargement, bit for bit.

Pillow is the peer: on growing sizes its arithmetic is the same from 11.3 to 13.0 (13.0 changed the
pass order only where the height shrinks), so these checks hold for every Pillow the project allows.
"""
import numpy as np
import pytest
from PIL import Image

from sedic.streams import lanczos
from sedic.streams.reference import upsample


def _pillow(img, width, height):
    return np.asarray(Image.fromarray(img).resize((width, height), Image.LANCZOS))


def _sizes():
    rng = np.random.default_rng(17)
    out = [(1, 1, 1, 1), (1, 1, 7, 5), (1, 9, 1, 40), (9, 1, 40, 1), (1, 30, 16, 480), (2, 3, 32, 48),
           (16, 16, 256, 256), (23, 17, 23, 272), (5, 7, 80, 7)]
    for _ in range(120):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        if rng.random() < 0.5:  # a factor of the format (or any), exact or rounded
            f = float(rng.choice([1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16]))
            H, W = max(h, round(h * f)), max(w, round(w * f))
        else:
            H, W = h + int(rng.integers(0, 200)), w + int(rng.integers(0, 200))
        out.append((h, w, H, W))
    return out


@pytest.mark.parametrize("h,w,H,W", _sizes())
def test_equals_pillow_lanczos(h, w, H, W):
    img = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(upsample(img, W, H), _pillow(img, W, H))


def test_equals_pillow_on_smooth_and_extreme_content():
    # saturated edges exercise the clipping after each pass; a gradient the rounding
    yy, xx = np.mgrid[0:37, 0:29]
    grad = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    edges = np.where(((xx // 3 + yy // 2) % 2)[..., None] == 1, 255, 0).astype(np.uint8).repeat(3, -1)
    for img in (grad, edges):
        for W, H in ((29 * 3, 37 * 2), (293, 371), (464, 592)):
            assert np.array_equal(lanczos.resize(img, W, H), _pillow(img, W, H))


def test_large_image_in_bands():
    # more rows and columns than one band holds, so band edges are crossed in both passes
    img = np.random.default_rng(5).integers(0, 256, (160, 213, 3), dtype=np.uint8)
    assert np.array_equal(lanczos.resize(img, 1600, 1201), _pillow(img, 1600, 1201))


def test_same_size_is_a_copy_and_shrinking_is_refused():
    img = np.zeros((4, 5, 3), np.uint8)
    out = lanczos.resize(img, 5, 4)
    assert np.array_equal(out, img) and out is not img
    with pytest.raises(ValueError, match="upsampling only"):
        lanczos.resize(img, 4, 4)
