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
    for grid, png in zip(grids, entry["masks"], strict=True):
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


def _dav1d_planes(avif_file: bytes):
    """The AV1 frame of an AVIF file decoded by dav1d through PyAV: Y, U, V planes (no RGB)."""
    import io

    import av  # the test extra; the AV1 decode is bit-exact by the AV1 standard

    from sedic.streams import avif

    stripped = avif.strip_avif(avif_file)
    item = avif.build_av1_item(stripped.header, stripped.frame_payload)
    with av.open(io.BytesIO(item), format="obu") as cont:
        frame = next(cont.decode(cont.streams.video[0]))
    w, h = stripped.header.width, stripped.header.height
    cw, ch = (w + 1) // 2, (h + 1) // 2

    def plane(i, pw, ph):
        p = frame.planes[i]
        return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:ph, :pw]

    assert frame.format.name == "yuv420p"
    return plane(0, w, h), plane(1, cw, ch), plane(2, cw, ch)


def _avif_files():
    """The AVIF files the vectors' payloads rebuild to, and Pillow-written ones of 71 sizes."""
    from sedic import bitstream as bs
    from sedic.streams import avif, reference

    for entry in MANIFEST["valid"]:
        if entry["reference"]["codec"] != "avif":
            continue
        c = bs.unpack((VECTORS / entry["file"]).read_bytes())
        level, tools, rw, rh, frame = reference.AvifCodec().parse(c.sections[bs.REFERENCE], c.width, c.height)
        yield entry["file"], avif.build_avif(avif.SequenceHeader(rw, rh, level, tools), frame)
    rng = np.random.default_rng(1)
    sizes = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 3), (3, 2), (2, 3), (17, 1), (1, 17), (4, 7), (7, 4)]
    sizes += [tuple(int(v) for v in rng.integers(1, 90, 2)) for _ in range(60)]
    for w, h in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if rng.random() < 0.5:
            img = (img // 64 * 64).astype(np.uint8)  # saturated colours exercise the clamps
        yield f"{w}x{h}", reference.AvifCodec().encode_avif_file(img, int(rng.integers(20, 90)))


def test_yuv_to_rgb_from_the_docs_equals_libavif():
    """docs/reference-stream.md's YUV to RGB arithmetic, on dav1d's planes, gives exactly the RGB
    that Pillow's libavif returns: for every vector and for 71 sizes from 1x1 up."""
    import io

    for name, data in _avif_files():
        y, u, v = _dav1d_planes(data)
        with Image.open(io.BytesIO(data), formats=["AVIF"]) as im:
            expected = np.asarray(im.convert("RGB"))
        assert np.array_equal(spec_reader.yuv420_to_rgb(y, u, v), expected), name
