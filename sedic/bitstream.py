"""The .sedic container: a tiny header and typed, length-prefixed sections (docs/bitstream.md).

    file    = magic "SD" | version u8 | width varint | height varint | section* | crc16
    section = varint(length << 3 | type) | payload[length]
    crc16   = CRC-16/GENIBUS of every byte before it, big-endian (2 bytes)

Sections appear at most once each, in the order settings, text, masks, reference; settings and
reference are required; masks are present exactly when the text names at least one object.
The container knows nothing about what the stream payloads mean; `sedic.codec` does.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any

from .errors import BitstreamError
from .schedule import BY_KEY, ScheduleOverrides

MAGIC = b"SD"
VERSION = 2  # 2: the CRC-16 closing the file (version 1 had none)
CHECK_BYTES = 2

# Limits checked before anything is allocated: a 16384 px side, 64 Mpx, a 16 MiB file
# (0.05 bpp of the largest image is about 400 KB, so these leave ample headroom).
MAX_SIDE = 16384
MAX_PIXELS = 1 << 26
MAX_FILE_BYTES = 16 << 20

SETTINGS, TEXT, MASKS, REFERENCE = 1, 2, 3, 4
SECTION_NAMES = {SETTINGS: "settings", TEXT: "text", MASKS: "masks", REFERENCE: "reference"}
_ORDER = (SETTINGS, TEXT, MASKS, REFERENCE)

# Decoder-setting overrides carried in the settings section as (key, value code) varint pairs;
# their keys, codes and limits are the fields of sedic.schedule.ScheduleOverrides.
OVERRIDE_KEYS = {spec.key: spec.name for spec in BY_KEY}
_BY_KEY = {spec.key: spec for spec in BY_KEY}


def write_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit = more bytes follow."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int, what: str, limit: int) -> tuple[int, int]:
    """Read a minimal LEB128 varint at `pos` whose value is at most `limit`.

    Checks in this order (docs/bitstream.md, "Varints"): the bytes run out (truncated); more
    bytes than `limit` itself needs (the reader stops there, so a corrupt file cannot make it
    read on); a last byte 0x00 after others (not minimal); the value above `limit`."""
    max_bytes = len(write_varint(limit))
    value = 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            raise BitstreamError(f"truncated file: {what} ends early")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise BitstreamError(f"{what} is not minimally encoded")
            if value > limit:
                raise BitstreamError(f"{what} is {value}, above the limit {limit}")
            return value, pos + i + 1
    raise BitstreamError(f"{what} is longer than {max_bytes} bytes, above the limit {limit}")


@dataclass
class DecoderParams:
    """What the settings section carries: profile id, seed and explicit schedule overrides."""

    profile_id: int = 0
    seed: int = 0
    overrides: ScheduleOverrides = field(default_factory=ScheduleOverrides)

    def to_bytes(self) -> bytes:
        out = bytearray(write_varint(self.profile_id) + write_varint(self.seed))
        for spec in BY_KEY:  # the record holds only values the file can carry
            value = getattr(self.overrides, spec.name)
            if value is not None:
                out += write_varint(spec.key) + write_varint(spec.code(value))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> DecoderParams:
        profile_id, pos = read_varint(data, 0, "profile id", 1 << 16)
        seed, pos = read_varint(data, pos, "seed", (1 << 32) - 1)
        values: dict[str, Any] = {}
        last_key = 0
        while pos < len(data):
            key, pos = read_varint(data, pos, "setting key", 1 << 16)
            if key not in _BY_KEY or key <= last_key:
                raise BitstreamError(f"unknown or repeated decoder setting key {key}")
            spec = _BY_KEY[key]
            code, pos = read_varint(data, pos, spec.name, spec.high)
            if code < spec.low:
                raise BitstreamError(f"{spec.name} is {code}, below the minimum {spec.low}")
            values[spec.name] = spec.value(code)
            last_key = key
        return cls(profile_id, seed, ScheduleOverrides(**values))


@dataclass
class Container:
    width: int
    height: int
    sections: dict[int, bytes]  # section type -> payload

    def header_bits(self, total_bytes: int) -> int:
        """Everything that is not a stream payload: magic, version, sizes, section headers, settings."""
        payload = sum(len(self.sections.get(t, b"")) for t in (TEXT, MASKS, REFERENCE))
        return 8 * (total_bytes - payload)


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/GENIBUS: polynomial 0x1021, init 0xFFFF, no reflection, xorout 0xFFFF.

    Any CRC whose polynomial has two or more terms catches every single-bit error at any length;
    0x1021 (a multiple of x + 1) also catches every odd number of flipped bits, every burst of up
    to 16 bits and any 3 flipped bits in files of up to 4 KB. The final inversion (xorout) keeps
    zero bytes appended after the check value from checking out, which they would with xorout 0.
    binascii.crc_hqx is the CCITT-FALSE core (same polynomial and init, xorout 0).
    """
    return binascii.crc_hqx(data, 0xFFFF) ^ 0xFFFF


def check_size(width: int, height: int) -> None:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise BitstreamError(f"image size {width}x{height} outside 1..{MAX_SIDE}")
    if width * height > MAX_PIXELS:
        raise BitstreamError(f"image size {width}x{height} above the limit of {MAX_PIXELS} pixels")


def pack(container: Container) -> bytes:
    check_size(container.width, container.height)
    out = bytearray(MAGIC)
    out.append(VERSION)
    out += write_varint(container.width) + write_varint(container.height)
    for kind in _ORDER:
        if kind in container.sections:
            payload = container.sections[kind]
            out += write_varint(len(payload) << 3 | kind) + payload
    out += crc16(out).to_bytes(CHECK_BYTES, "big")
    return bytes(out)


def _bits_off(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def _check_matches(data: bytes) -> bool:
    return crc16(data[:-CHECK_BYTES]) == int.from_bytes(data[-CHECK_BYTES:], "big")


def unpack(data: bytes) -> Container:
    """Parse and validate the container; every failure is a BitstreamError."""
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"file of {len(data)} bytes is above the limit of {MAX_FILE_BYTES}")
    if len(data) < 3 or data[:2] != MAGIC:
        if len(data) >= 3 + CHECK_BYTES and _bits_off(data[:2], MAGIC) <= 2 and not _check_matches(data):
            raise BitstreamError("corrupt file: its first bytes (the .sedic magic) are damaged and the "
                                 "CRC-16 does not match")
        raise BitstreamError("not a .sedic file (bad magic)")
    if data[2] != VERSION:
        # an older version is named as such (version 1 had no check value to test); any other
        # version byte whose check value fails is a flipped bit, not a newer file
        older = 1 <= data[2] < VERSION
        if not older and len(data) >= 3 + CHECK_BYTES and not _check_matches(data):
            raise BitstreamError(f"corrupt file: it says version {data[2]} but its CRC-16 does not match "
                                 f"(damaged, not a newer format)")
        raise BitstreamError(f"unsupported .sedic version {data[2]} (this sedic reads version {VERSION})")
    # The check comes before any field is trusted: a damaged file is reported as such, not as
    # whatever its damaged fields happen to say. Truncation is caught here too (the check value
    # would have to match whatever two bytes the cut left at the end) and, independently, by the
    # last section's declared length running past the end.
    if len(data) < 3 + CHECK_BYTES:
        raise BitstreamError("truncated file: no check value")
    data, stored = data[:-CHECK_BYTES], int.from_bytes(data[-CHECK_BYTES:], "big")
    if crc16(data) != stored:
        raise BitstreamError(f"corrupt file: CRC-16 is 0x{crc16(data):04x}, the file says 0x{stored:04x} "
                             f"(damaged or truncated)")
    width, pos = read_varint(data, 3, "width", MAX_SIDE)
    height, pos = read_varint(data, pos, "height", MAX_SIDE)
    check_size(width, height)
    sections: dict[int, bytes] = {}
    last = 0
    while pos < len(data):
        head, pos = read_varint(data, pos, "section header", MAX_FILE_BYTES << 3 | 7)
        kind, length = head & 7, head >> 3
        if kind not in SECTION_NAMES:
            raise BitstreamError(f"unknown section type {kind}")
        if _ORDER.index(kind) < last or kind in sections:
            raise BitstreamError(f"section {SECTION_NAMES[kind]} out of order or repeated")
        if length > len(data) - pos:
            raise BitstreamError(f"truncated file: {SECTION_NAMES[kind]} section declares {length} bytes, "
                                 f"{len(data) - pos} remain")
        sections[kind] = bytes(data[pos:pos + length])
        pos += length
        last = _ORDER.index(kind)
    for required in (SETTINGS, REFERENCE):
        if required not in sections:
            raise BitstreamError(f"truncated file: no {SECTION_NAMES[required]} section")
    if MASKS in sections and TEXT not in sections:
        raise BitstreamError("masks section without a text section")
    return Container(width, height, sections)


def read_file(path) -> bytes:
    """Read a .sedic file from disk, refusing oversized files before reading them."""
    import os
    from pathlib import Path

    from .errors import InputError

    path = Path(os.fspath(path))
    too_big = f"is above the limit of {MAX_FILE_BYTES} bytes for a .sedic file"
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BitstreamError(f"{path}: {size} bytes {too_big}")
        # Read one byte past the limit at most: a pipe or device (/dev/zero) reports size 0.
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise BitstreamError(f"{path}: more than {MAX_FILE_BYTES} bytes {too_big}")
        return data
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
