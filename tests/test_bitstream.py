import pytest

from sedic import bitstream as bs
from sedic.errors import BitstreamError


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1])
def test_varint_round_trip(value):
    data = bs.write_varint(value)
    assert bs.read_varint(data, 0, "v", 2**40) == (value, len(data))


def test_varint_rejects_overlong_truncated_and_large():
    with pytest.raises(BitstreamError, match="minimally"):
        bs.read_varint(b"\x80\x00", 0, "v", 1000)
    with pytest.raises(BitstreamError, match="truncated"):
        bs.read_varint(b"\x80", 0, "v", 1000)
    with pytest.raises(BitstreamError, match="limit"):
        bs.read_varint(bs.write_varint(1001), 0, "v", 1000)


def _container(**extra):
    sections = {bs.SETTINGS: bs.DecoderParams(0, 0).to_bytes(), bs.TEXT: b"t" * 300,
                bs.MASKS: b"m" * 80, bs.REFERENCE: b"r" * 1200}
    sections.update(extra)
    return bs.Container(768, 512, sections)


def test_typical_header_is_at_most_16_bytes():
    c = _container()
    data = bs.pack(c)
    assert c.header_bits(len(data)) == 8 * 16
    back = bs.unpack(data)
    assert (back.width, back.height, back.sections) == (768, 512, c.sections)


def test_decoder_params_round_trip():
    p = bs.DecoderParams(2, 12345, {"object_steps": 8, "final_cfg": 6.5})
    assert bs.DecoderParams.from_bytes(p.to_bytes()) == p


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XX" + d[2:], "magic"),
    (lambda d: d[:2] + b"\x07" + d[3:], "version 7"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d + b"\x00", "unknown section type 0"),
    (lambda d: d[:3] + bs.write_varint(20000) + d[5:], "width"),
])
def test_unpack_rejects(mutate, message):
    with pytest.raises(BitstreamError, match=message):
        bs.unpack(mutate(bs.pack(_container())))


def test_sections_out_of_order_or_missing():
    good = _container()
    text = bs.write_varint(3 << 3 | bs.TEXT) + b"abc"
    settings = bs.write_varint(2 << 3 | bs.SETTINGS) + b"\x00\x00"
    head = bs.MAGIC + bytes([bs.VERSION]) + bs.write_varint(8) + bs.write_varint(8)
    with pytest.raises(BitstreamError, match="out of order"):
        bs.unpack(head + text + settings)
    with pytest.raises(BitstreamError, match="no reference"):
        bs.unpack(head + settings + text)
    assert bs.unpack(bs.pack(good)).sections == good.sections


def test_oversized_image_rejected_before_allocation():
    head = bs.MAGIC + bytes([bs.VERSION]) + bs.write_varint(16384) + bs.write_varint(16384)
    with pytest.raises(BitstreamError, match="pixels"):
        bs.unpack(head)
