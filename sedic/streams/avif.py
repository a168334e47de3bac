"""Strip and rebuild the AVIF (ISOBMFF) container around one AV1 still frame.

Pillow (libavif + aom) writes ~275 bytes of boxes plus a 13-byte AV1 temporal
delimiter and sequence header around the coded frame. At 0.02 bpp that is a
quarter of the reference budget, and all of it follows from a handful of
numbers. The encoder side parses what Pillow wrote, keeps only the frame OBU
payload plus those numbers, and *verifies* that rebuilding gives back the very
same bytes; the decoder side rebuilds the file. Anything Pillow writes that we
do not reproduce exactly is refused with AvifLayoutError rather than guessed at.

Layout written and accepted (all integers big-endian):

    ftyp  major 'avif', minor 0, compatible 'avif' 'mif1' 'miaf' 'MA1B'
    meta  (v0) hdlr 'pict' name ""; pitm item 1; iloc v0 (offset 4 B, length 4 B, 1 extent);
          iinf v0 1 entry: infe v2 item 1 'av01' name "Color";
          iprp: ipco [ispe w h, pixi 3x8 bit, av1C, colr nclx 1/13/6 full range],
                ipma item 1 -> 1, 2, 3 (essential), 4
    mdat  OBU_TEMPORAL_DELIMITER, OBU_SEQUENCE_HEADER, OBU_FRAME (all with size fields)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sedic.bitstream import write_varint  # AV1 OBU sizes are the same unsigned LEB128
from sedic.errors import SedicError


class AvifLayoutError(SedicError):
    """Pillow wrote an AVIF file whose layout we cannot strip and rebuild exactly."""


# ---------------------------------------------------------------- bit I/O


class _BitReader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def f(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise AvifLayoutError("AV1 sequence header is truncated")
            v = (v << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def f(self, n: int, v: int) -> None:
        for i in range(n - 1, -1, -1):
            self.bits.append((v >> i) & 1)

    def trailing(self) -> bytes:
        # AV1 trailing_bits(): a one bit, then zeros up to the byte boundary.
        self.bits.append(1)
        while len(self.bits) % 8:
            self.bits.append(0)
        out = bytearray()
        for i in range(0, len(self.bits), 8):
            b = 0
            for bit in self.bits[i : i + 8]:
                b = (b << 1) | bit
            out.append(b)
        return bytes(out)


# ------------------------------------------------- AV1 sequence header

# Colour config we ask Pillow for (RGB input, range="full", 4:2:0, 8 bit):
# BT.709 primaries, sRGB transfer, BT.601 matrix, full range. Not stored.
_CP, _TC, _MC = 1, 13, 6

# Order of the coding-tool flags in the stored 6-bit field (MSB first).
TOOL_FLAGS = ("use_128x128_superblock", "enable_filter_intra", "enable_intra_edge_filter",
              "enable_superres", "enable_cdef", "enable_restoration")
# What aom writes for every size and speed we tried; stored in 1 bit when it matches.
DEFAULT_TOOLS = 0b011010


@dataclass(frozen=True)
class SequenceHeader:
    width: int
    height: int
    level: int  # seq_level_idx, 5 bits
    tools: int  # TOOL_FLAGS packed, 6 bits


def _dim_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def write_sequence_header(sh: SequenceHeader) -> bytes:
    """Sequence header OBU payload for a reduced still-picture header, profile 0."""
    w = _BitWriter()
    w.f(3, 0)  # seq_profile 0 (8-bit 4:2:0)
    w.f(1, 1)  # still_picture
    w.f(1, 1)  # reduced_still_picture_header
    w.f(5, sh.level)
    wb, hb = _dim_bits(sh.width), _dim_bits(sh.height)
    w.f(4, wb - 1)
    w.f(4, hb - 1)
    w.f(wb, sh.width - 1)
    w.f(hb, sh.height - 1)
    for i in range(6):
        w.f(1, (sh.tools >> (5 - i)) & 1)
    # color_config
    w.f(1, 0)  # high_bitdepth
    w.f(1, 0)  # mono_chrome
    w.f(1, 1)  # color_description_present_flag
    w.f(8, _CP)
    w.f(8, _TC)
    w.f(8, _MC)
    w.f(1, 1)  # color_range: full
    w.f(2, 0)  # chroma_sample_position: unknown
    w.f(1, 0)  # separate_uv_delta_q
    w.f(1, 0)  # film_grain_params_present
    return w.trailing()


def parse_sequence_header(data: bytes) -> SequenceHeader:
    """Read the fields we store; the rest must equal what write_sequence_header writes."""
    r = _BitReader(data)
    profile, still, reduced = r.f(3), r.f(1), r.f(1)
    if (profile, still, reduced) != (0, 1, 1):
        raise AvifLayoutError(
            f"expected a profile-0 reduced still-picture sequence header, got "
            f"profile={profile} still={still} reduced={reduced}")
    level = r.f(5)
    wb, hb = r.f(4) + 1, r.f(4) + 1
    width, height = r.f(wb) + 1, r.f(hb) + 1
    tools = r.f(6)
    sh = SequenceHeader(width, height, level, tools)
    if write_sequence_header(sh) != data:
        raise AvifLayoutError("AV1 sequence header has fields we do not rebuild "
                              "(colour config, dimension bit widths or trailing bits)")
    return sh


# ---------------------------------------------------------------- OBUs

OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER, OBU_FRAME = 1, 2, 6


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    v = 0
    for i in range(8):
        if pos >= len(data):
            raise AvifLayoutError("truncated OBU size")
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return v, pos
    raise AvifLayoutError("OBU size longer than 8 bytes")


def _obu(obu_type: int, payload: bytes) -> bytes:
    # forbidden=0, type, extension=0, has_size_field=1, reserved=0
    return bytes([(obu_type << 3) | 0x02]) + write_varint(len(payload)) + payload


def split_obus(data: bytes) -> list[tuple[int, bytes]]:
    obus, pos = [], 0
    while pos < len(data):
        hdr = data[pos]
        if hdr & 0x87 != 0x02:  # forbidden bit, extension flag, has_size, reserved
            raise AvifLayoutError(f"unexpected OBU header byte 0x{hdr:02x}")
        size, pos = _read_leb128(data, pos + 1)
        if pos + size > len(data):
            raise AvifLayoutError("OBU runs past the end of the item data")
        obus.append(((hdr >> 3) & 0x0F, data[pos : pos + size]))
        pos += size
    return obus


def build_av1_item(sh: SequenceHeader, frame_payload: bytes) -> bytes:
    return (_obu(OBU_TEMPORAL_DELIMITER, b"") + _obu(OBU_SEQUENCE_HEADER, write_sequence_header(sh))
            + _obu(OBU_FRAME, frame_payload))


# ---------------------------------------------------------------- ISOBMFF


def _box(typ: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + typ + payload


def _fullbox(typ: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(typ, struct.pack(">I", (version << 24) | flags) + payload)


def build_avif(sh: SequenceHeader, frame_payload: bytes) -> bytes:
    """The exact AVIF file Pillow writes for this sequence header and frame."""
    item = build_av1_item(sh, frame_payload)
    # libavif names the AVIF baseline brand for every 8-bit 4:2:0 image, whatever the AV1 level
    # (a level above 5.1, from about 4096x2304 up, does not drop it).
    brands = [b"avif", b"mif1", b"miaf", b"MA1B"]
    ftyp = _box(b"ftyp", b"avif" + struct.pack(">I", 0) + b"".join(brands))
    hdlr = _fullbox(b"hdlr", 0, 0, struct.pack(">I", 0) + b"pict" + bytes(12) + b"\0")
    pitm = _fullbox(b"pitm", 0, 0, struct.pack(">H", 1))
    infe = _fullbox(b"infe", 2, 0, struct.pack(">HH", 1, 0) + b"av01" + b"Color\0")
    iinf = _fullbox(b"iinf", 0, 0, struct.pack(">H", 1) + infe)
    ispe = _fullbox(b"ispe", 0, 0, struct.pack(">II", sh.width, sh.height))
    pixi = _fullbox(b"pixi", 0, 0, bytes([3, 8, 8, 8]))
    # av1C: marker/version, profile|level, tier/bitdepth/mono/ss_x=1/ss_y=1/csp=0, no delay
    av1c = _box(b"av1C", bytes([0x81, sh.level & 0x1F, 0x0C, 0x00]))
    colr = _box(b"colr", b"nclx" + struct.pack(">HHHB", _CP, _TC, _MC, 0x80))
    ipco = _box(b"ipco", ispe + pixi + av1c + colr)
    ipma = _fullbox(b"ipma", 0, 0, struct.pack(">IHB", 1, 1, 4) + bytes([0x01, 0x02, 0x83, 0x04]))
    iprp = _box(b"iprp", ipco + ipma)

    def meta_with(offset: int) -> bytes:
        iloc = _fullbox(b"iloc", 0, 0, bytes([0x44, 0x00]) + struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(item)))
        return _fullbox(b"meta", 0, 0, hdlr + pitm + iloc + iinf + iprp)

    # The iloc offset points past ftyp + meta + mdat header; meta's size does not depend on it.
    offset = len(ftyp) + len(meta_with(0)) + 8
    return ftyp + meta_with(offset) + _box(b"mdat", item)


def _top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    boxes, pos = [], 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise AvifLayoutError("truncated box header")
        size, typ = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8 or pos + size > len(data):  # 64-bit and to-end sizes are not written by libavif
            raise AvifLayoutError(f"unsupported size {size} for box {typ!r}")
        boxes.append((typ, pos + 8, pos + size))
        pos += size
    return boxes


@dataclass(frozen=True)
class StrippedAvif:
    header: SequenceHeader
    frame_payload: bytes


def strip_avif(data: bytes) -> StrippedAvif:
    """Split a Pillow-written AVIF into what cannot be rebuilt; verify the rebuild is exact."""
    boxes = _top_boxes(data)
    if [b[0] for b in boxes] != [b"ftyp", b"meta", b"mdat"]:
        raise AvifLayoutError(f"expected boxes ftyp, meta, mdat; got {[b[0] for b in boxes]}")
    _, start, end = boxes[2]
    obus = split_obus(data[start:end])
    types = [t for t, _ in obus]
    if types != [OBU_TEMPORAL_DELIMITER, OBU_SEQUENCE_HEADER, OBU_FRAME] or obus[0][1]:
        raise AvifLayoutError(f"expected OBUs temporal delimiter, sequence header, frame; got {types}")
    stripped = StrippedAvif(parse_sequence_header(obus[1][1]), obus[2][1])
    if build_avif(stripped.header, stripped.frame_payload) != data:
        raise AvifLayoutError("rebuilt AVIF container differs from the one Pillow wrote "
                              "(unexpected libavif version or options)")
    return stripped
