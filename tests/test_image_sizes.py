"""Image sizes at the edges of the documented range (issue 11, items 7-9).

AV1 levels above 5.1 (seq_level_idx > 13) start at about 4096x2304 pixels, or at a side above
8192 (horizontal) / 4352 (vertical); thin frames reach those levels cheaply.
"""

import io

import numpy as np
import pytest
from PIL import Image

from sedic import bitstream as bs, codec
from sedic.streams import avif as avif_mod
from sedic.streams.reference import AvifCodec, ReferenceSetting


def _pattern(w: int, h: int) -> np.ndarray:
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    return np.stack(np.broadcast_arrays(x, y, (x + y) / 2), -1).astype(np.uint8)


@pytest.mark.parametrize("w,h", [(8193, 16), (16, 4353), (16384, 16), (16, 8705), (4096, 2304)])
def test_avif_rebuild_above_level_5_1(w, h):
    image = _pattern(w, h)
    avif = AvifCodec()
    original = avif.encode_avif_file(image, 10)
    stripped = avif_mod.strip_avif(original)
    assert stripped.header.level > 13
    assert avif_mod.build_avif(stripped.header, stripped.frame_payload) == original
    payload = avif.encode(image, ReferenceSetting(0, 10))
    ours = avif.decode_reduced(payload, w, h)
    assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(original)).convert("RGB")))


def test_compress_with_rate_search_over_a_high_level_size():
    # The rate search tries the full size first: this is what made phone photos fail.
    image = _pattern(8193, 16)
    data = codec.encode(image, None, "test", bpp=0.05)
    assert 8 * len(data) <= 0.05 * 8193 * 16
    assert codec.decode_preview(codec.parse(data)).shape == (16, 8193, 3)


@pytest.mark.parametrize("w,h", [(4000, 3000), (8192, 5464), (16384, 4096)])
def test_phone_and_limit_sizes_round_trip(w, h):
    # The smallest reference (bpp=None) keeps this fast; the sizes exercise the container, the
    # mask grid and the preview at full size.
    assert w * h <= bs.MAX_PIXELS
    image = _pattern(w, h)
    mask = np.zeros((h, w), bool)
    mask[h // 4: h // 2, w // 4: w // 2] = True
    from sedic.semantics import SemanticObject, Semantics

    semantics = Semantics("a gradient", [SemanticObject("block", "a block", mask)])
    data = codec.encode(image, semantics, "test", bpp=None)
    parsed = codec.parse(data)
    assert (parsed.width, parsed.height) == (w, h)
    assert parsed.semantics.objects[0].mask.shape == (-(-h // 8), -(-w // 8))
    assert codec.decode_preview(parsed).shape == (h, w, 3)


def test_the_documented_maximum_of_32_objects_round_trips():
    from sedic.semantics import MAX_OBJECTS, SemanticObject, Semantics

    h, w = 64, 128
    objects = []
    for k in range(MAX_OBJECTS):
        mask = np.zeros((h, w), bool)
        mask[(k // 8) * 16:(k // 8) * 16 + 16, (k % 8) * 16:(k % 8) * 16 + 16] = True
        objects.append(SemanticObject(f"tile {k}", f"square tile number {k}", mask))
    data = codec.encode(_pattern(w, h), Semantics("a grid of tiles", objects), "test", bpp=None)
    parsed = codec.parse(data)
    assert [o.name for o in parsed.semantics.objects] == [f"tile {k}" for k in range(MAX_OBJECTS)]
    from sedic.semantics import SemanticObject as Obj

    too_many = objects + [Obj("extra", "one too many", objects[0].mask)]
    from sedic.errors import InputError

    with pytest.raises(InputError, match="at most 32"):
        codec.encode(_pattern(w, h), Semantics("a grid of tiles", too_many), "test", bpp=None)
