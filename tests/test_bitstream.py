import pytest

from sedic import bitstream as bs
from sedic.errors import BitstreamError
from sedic.schedule import ScheduleOverrides


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


def test_typical_header_is_at_most_18_bytes():
    # 16 bytes of structure and settings + the 2-byte CRC-16 (docs/bitstream.md)
    c = _container()
    data = bs.pack(c)
    assert c.header_bits(len(data)) == 8 * 18
    back = bs.unpack(data)
    assert (back.width, back.height, back.sections) == (768, 512, c.sections)


def test_decoder_params_round_trip():
    p = bs.DecoderParams(2, 12345, ScheduleOverrides(object_steps=8, final_cfg=6.5))
    assert bs.DecoderParams.from_bytes(p.to_bytes()) == p


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XX" + d[2:], "magic"),
    (lambda d: d[:2] + b"\x07" + d[3:], "version 7"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:-2], "truncated"),
    (lambda d: d + b"\x00", "corrupt"),
    (lambda d: d[:3] + bs.write_varint(20000) + d[5:], "corrupt"),
    (lambda d: d[:-3] + bytes([d[-3] ^ 1]) + d[-2:], "corrupt"),
])
def test_unpack_rejects(mutate, message):
    with pytest.raises(BitstreamError, match=message):
        bs.unpack(mutate(bs.pack(_container())))


def _sealed(body: bytes) -> bytes:
    """A body with a valid check value: what a writer with a structural bug would produce."""
    return body + bs.crc16(body).to_bytes(2, "big")


def test_sections_out_of_order_or_missing():
    good = _container()
    text = bs.write_varint(3 << 3 | bs.TEXT) + b"abc"
    settings = bs.write_varint(2 << 3 | bs.SETTINGS) + b"\x00\x00"
    head = bs.MAGIC + bytes([bs.VERSION]) + bs.write_varint(8) + bs.write_varint(8)
    with pytest.raises(BitstreamError, match="out of order"):
        bs.unpack(_sealed(head + text + settings))
    with pytest.raises(BitstreamError, match="no reference"):
        bs.unpack(_sealed(head + settings + text))
    assert bs.unpack(bs.pack(good)).sections == good.sections


def test_oversized_image_rejected_before_allocation():
    head = bs.MAGIC + bytes([bs.VERSION]) + bs.write_varint(16384) + bs.write_varint(16384)
    with pytest.raises(BitstreamError, match="pixels"):
        bs.unpack(_sealed(head))


def test_crc16_is_genibus():
    # The catalogue check value of CRC-16/GENIBUS (poly 0x1021, init 0xFFFF, no reflection,
    # xorout 0xFFFF), quoted in docs/bitstream.md so that a second implementation can test itself.
    assert bs.crc16(b"123456789") == 0xD64E
    assert bs.crc16(b"") == 0x0000


def test_check_value_closes_the_file():
    data = bs.pack(_container())
    assert data[-2:] == bs.crc16(data[:-2]).to_bytes(2, "big")


def test_old_version_is_named():
    data = bs.pack(_container())
    old = data[:2] + b"\x01" + data[3:-2]
    with pytest.raises(BitstreamError, match="version 1"):
        bs.unpack(old)


def test_every_bit_flip_and_truncation_of_a_container_is_caught():
    c = bs.Container(100, 60, {bs.SETTINGS: bs.DecoderParams(1, 5).to_bytes(), bs.TEXT: b"t" * 40,
                               bs.MASKS: b"m" * 20, bs.REFERENCE: b"r" * 60})
    data = bs.pack(c)
    for i in range(8 * len(data)):
        bad = bytearray(data)
        bad[i // 8] ^= 0x80 >> (i % 8)
        with pytest.raises(BitstreamError):
            bs.unpack(bytes(bad))
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            bs.unpack(data[:cut])


def test_varint_checks_length_then_minimality_then_value():
    # docs/bitstream.md "Varints": a reader stops after the bytes the limit needs, and the
    # message of a value above the limit names the whole value, not a partial sum.
    with pytest.raises(BitstreamError, match=r"^v is 1001, above the limit 1000$"):
        bs.read_varint(bs.write_varint(1001), 0, "v", 1000)
    with pytest.raises(BitstreamError, match=r"^v is 16383, above the limit 1000$"):
        bs.read_varint(b"\xff\x7f", 0, "v", 1000)
    with pytest.raises(BitstreamError, match=r"^v is longer than 2 bytes, above the limit 1000$"):
        bs.read_varint(b"\x81\x80\x01", 0, "v", 1000)  # 16385 in 3 bytes
    with pytest.raises(BitstreamError, match=r"^v is longer than 2 bytes"):
        bs.read_varint(b"\x85\x80\x00", 0, "v", 1000)  # non-minimal too, but the length comes first
    with pytest.raises(BitstreamError, match=r"^v is longer than 1 bytes, above the limit 1$"):
        bs.read_varint(b"\x81\x00", 0, "v", 1)
    with pytest.raises(BitstreamError, match=r"^v is not minimally encoded$"):
        bs.read_varint(b"\x85\x00", 0, "v", 1000)
    # the section header's limit, (16 MiB << 3) | 7, takes 4 bytes
    assert len(bs.write_varint(bs.MAX_FILE_BYTES << 3 | 7)) == 4
    with pytest.raises(BitstreamError, match=r"^section header is longer than 4 bytes"):
        bs.read_varint(b"\x80\x80\x80\x80\x01", 0, "section header", bs.MAX_FILE_BYTES << 3 | 7)
