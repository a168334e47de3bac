"""Mutated .sedic files: nothing but BitstreamError may come out of parsing and decoding."""

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sedic import bitstream as bs, codec
from sedic.errors import BitstreamError, ModelUnavailableError
from sedic.semantics import SemanticObject, Semantics
from sedic.streams.reference import CODEC_COMPRESSAI


@functools.lru_cache(maxsize=1)
def valid_file() -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:72]
    image = np.clip(np.stack([x * 3, y * 4, (x + y) * 2], -1) + rng.integers(0, 20, (48, 72, 3)), 0, 255)
    a = np.zeros((48, 72), bool)
    a[5:30, 10:40] = True
    b = np.zeros((48, 72), bool)
    b[20:45, 40:70] = True
    semantics = Semantics("a test pattern of colour gradients",
                          [SemanticObject("square", "a bright square with soft edges", a),
                           SemanticObject("block", "a second block, darker, lower right", b)])
    return codec.encode(image.astype(np.uint8), semantics, "test", bpp=None, reference_bpp=2.0)


def decode_all(data: bytes) -> None:
    parsed = codec.parse(data)
    codec.inspect(data)
    try:
        preview = codec.decode_preview(parsed)
    except ModelUnavailableError:
        # A mutation that turns the reference into a well-formed CompressAI payload names weights
        # this machine lacks: a clean environment error, not a parsing failure.
        assert parsed.container.sections[bs.REFERENCE][0] >> 5 == CODEC_COMPRESSAI
        return
    assert preview.shape == (parsed.height, parsed.width, 3)


@functools.lru_cache(maxsize=1)
def valid_file_without_semantics() -> bytes:
    y, x = np.mgrid[0:40, 0:56]
    image = np.stack([x * 4, y * 5, (x * y) % 256], -1).astype(np.uint8)
    return codec.encode(image, None, "test", bpp=None, reference_bpp=1.0, seed=7,
                        overrides={"final_steps": 12, "final_cfg": 4.5})


def test_valid_file_decodes():
    decode_all(valid_file())
    decode_all(valid_file_without_semantics())


def _flip(data: bytes, bit: int) -> bytes:
    buf = bytearray(data)
    buf[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(buf)


@pytest.mark.parametrize("make", [valid_file, valid_file_without_semantics], ids=["semantics", "reference-only"])
def test_every_single_bit_flip_is_reported(make):
    """The CRC-16 at the end of the file catches every single-bit error (docs/bitstream.md)."""
    data = make()
    decoded = []
    for bit in range(8 * len(data)):
        try:
            codec.parse(_flip(data, bit))
        except BitstreamError as exc:
            assert str(exc)
        else:
            decoded.append(bit)
    assert not decoded, f"{len(decoded)} of {8 * len(data)} single-bit flips parsed as valid files"


@pytest.mark.parametrize("make", [valid_file, valid_file_without_semantics], ids=["semantics", "reference-only"])
def test_every_truncation_is_reported(make):
    data = make()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            codec.parse(data[:cut])


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def apply(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        pos = pos % (len(buf) + 1)
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= value
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf.insert(pos, value)
        elif kind == "delete" and pos < len(buf):
            del buf[pos]
    return bytes(buf)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_files_raise_only_bitstream_error(ops):
    data = apply(valid_file(), ops)
    try:
        decode_all(data)
    except BitstreamError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_resealed_mutations_raise_only_bitstream_error(ops):
    """Damage behind a recomputed check value (what a buggy writer would produce) still reaches
    the section and stream parsers: they must fail cleanly too."""
    body = apply(valid_file()[:-bs.CHECK_BYTES], ops)
    data = body + bs.crc16(body).to_bytes(bs.CHECK_BYTES, "big")
    try:
        decode_all(data)
    except BitstreamError as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_behind_a_valid_header(tail):
    try:
        body = bs.MAGIC + bytes([bs.VERSION]) + tail
        decode_all(body + bs.crc16(body).to_bytes(bs.CHECK_BYTES, "big"))
    except BitstreamError:
        pass


@pytest.mark.parametrize("cut", range(0, 40))
def test_every_short_prefix_is_rejected(cut):
    with pytest.raises(BitstreamError):
        decode_all(valid_file()[:cut])
