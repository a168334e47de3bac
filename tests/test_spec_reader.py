"""The docs are enough to read the streams: a reader written from them alone (tests/spec_reader.py:
the container, the range coder, the categorical rule, the text and mask models, in plain Python)
decodes every conformance vector to its manifest."""
import binascii
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spec_reader

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
TABLES = spec_reader.load_tables((ROOT / "sedic" / "streams" / "data" / "text_model_en.npz").read_bytes())


def _container(data: bytes):
    """docs/bitstream.md "Layout": magic, version 2, varint sizes, typed sections, CRC-16/GENIBUS."""
    assert data[:3] == b"SD\x02"
    assert int.from_bytes(data[-2:], "big") == binascii.crc_hqx(data[:-2], 0xFFFF) ^ 0xFFFF
    body, pos = data[:-2], 3

    def varint():
        nonlocal pos
        value = shift = 0
        while True:
            byte = body[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    width, height = varint(), varint()
    sections = {}
    while pos < len(body):
        head = varint()
        sections[head & 7] = body[pos:pos + (head >> 3)]
        pos += head >> 3
    return width, height, sections


@pytest.mark.parametrize("entry", MANIFEST["valid"], ids=[e["file"] for e in MANIFEST["valid"]])
def test_reader_from_the_docs_decodes_the_vectors(entry):
    width, height, sections = _container((VECTORS / entry["file"]).read_bytes())
    assert (width, height) == (entry["width"], entry["height"])
    strings = spec_reader.decode_strings(sections[2], TABLES) if 2 in sections else []
    assert strings == entry["strings"]
    k = (len(strings) - 1) // 2 if strings else 0
    h, w = -(-height // 8), -(-width // 8)
    grids = spec_reader.decode_masks(sections.get(3, b""), k, h, w)
    assert len(grids) == len(entry["masks"])
    for grid, png in zip(grids, entry["masks"]):
        assert np.array_equal(grid, np.asarray(Image.open(VECTORS / png)) == 255)


def test_categorical_rule_matches_constriction():
    """The stated float64 rule gives constriction's intervals (seen through a one-symbol encode)."""
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(17)
    for _ in range(200):
        n = int(rng.integers(2, 300))
        counts = rng.integers(0, int(rng.choice([3, 1000, 1 << 24])), n).astype(np.float64)
        counts[rng.integers(n)] += 1  # a positive sum
        cdf = spec_reader.categorical(counts.astype(np.int64).tolist())
        model = constriction.stream.model.Categorical(counts, perfect=False)
        for s in rng.integers(0, n, 3):
            enc = constriction.stream.queue.RangeEncoder()
            enc.encode(int(s), model)
            words = enc.get_compressed()
            # one symbol from the initial state: lower = scale * cdf(s), scale = (2^64-1) >> 24
            scale = ((1 << 64) - 1) >> 24
            lower = scale * cdf[s]
            point = (int(words[0]) << 32 | (int(words[1]) if len(words) > 1 else 0))
            assert lower <= point < lower + scale * (cdf[s + 1] - cdf[s])


@pytest.mark.parametrize("h,w,H,W", [(1, 1, 3, 2), (4, 3, 12, 9), (5, 7, 19, 7), (7, 5, 7, 31), (9, 6, 23, 40)])
def test_upsampler_from_the_docs_equals_sedic_and_pillow(h, w, H, W):
    from sedic.streams.reference import upsample

    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plain = spec_reader.upsample(img, W, H)
    assert np.array_equal(plain, upsample(img, W, H))
    assert np.array_equal(plain, np.asarray(Image.fromarray(img).resize((W, H), Image.LANCZOS)))
