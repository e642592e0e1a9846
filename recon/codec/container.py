"""The ``.rcz`` container: a validated header, then one range-coded payload per slice.

Layout (little endian; ``varint``: unsigned LEB128, 7 bits per byte, low bits first)::

    magic  b"\\x89RCZ" | version u8
    descriptor u8: bit 0 dtype (0 uint8, 1 uint16) | bits 1-2 layout | bits 3-5 source kind
                   (0 npy, 1 png, 2 tiff, 3 dicom, 4 h5) | bit 6 scale present | bit 7 zero
    bits u8 | slices, height, width varint | codec identity 16 bytes | [scale f64 (> 0)]
    per slice: payload length varint, payload CRC-32 u32
    header CRC-32 u32 (of everything above)
    payloads, back to back

``layout`` says how slices map back to the array: 0 ``(H, W)``, 1 ``(S, H, W)``, 2 ``(H, W, C)``,
3 ``(H, W, 3)`` stored as the YCoCg-R planes of :mod:`recon.codec.colour`.
``scale`` is present for float images (fastMRI h5 targets) that were coded as 16-bit integers:
the decoded values are ``integers × scale`` in float32. ``kind`` is the file type the data came from,
so that decoding a folder writes the same kind back.

Variable-length integers keep a 128×128 slice's file header at 38–39 bytes (version 2 spent 57 with
fixed-width fields, and 22 more per slice on the slice header, now 6–9: together 0.24% of a
losslessly coded 128×128 MR slice). :func:`read_header` checks every field, the header checksum,
that the payload lengths add up to the file's size and every payload's checksum, before anything is
allocated or decoded: a corrupted, truncated or hostile file is an :class:`InputError`, never a
crash or a huge allocation.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from recon.codec.colour import MAX_BITS as COLOUR_MAX_BITS
from recon.errors import InputError

MAGIC = b"\x89RCZ"
VERSION = 4  # 2: adaptive token probabilities, palette as gaps; 3: variable-length header fields;
# 4: transform-coded slices (recon.codec.subbands), YCoCg-R colour planes (layout 3)
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
LAYOUTS = (0, 1, 2, 3)
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # 256 Mpixel per file
KINDS = ("npy", "png", "tiff", "dicom", "h5")
_FIXED = struct.Struct("<4sBBB")  # magic, version, descriptor, bits
_CRC = struct.Struct("<I")
_SCALE = struct.Struct("<d")
IDENTITY_BYTES = 16
_HAS_SCALE = 0x40
_MAX_VARINT = {32: 5, 64: 10}  # longest encoding of a value below 2**bits


def pack_varint(value: int) -> bytes:
    """``value`` (≥ 0) as an unsigned LEB128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, offset: int, bits: int = 32) -> tuple[int, int]:
    """The varint at ``offset`` (at most ``bits`` bits) and the offset after it."""
    value = 0
    for i in range(_MAX_VARINT[bits]):
        if offset + i >= len(data):
            raise InputError("truncated codec data (a header field is cut short)")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >> bits:
                break
            return value, offset + i + 1
    raise InputError("corrupt codec data (a header field is too long)")


# float images: decoded as float32 integers × scale (float64 product, rounded once), so the largest
# 16-bit value must stay finite in float32; scales below float64's normal range are refused
MIN_SCALE, MAX_SCALE = float(np.finfo(np.float64).tiny), float(np.finfo(np.float32).max) / 65535


@dataclass(frozen=True)
class Header:
    dtype: np.dtype
    bits: int
    layout: int
    slices: int
    height: int
    width: int
    identity: bytes
    kind: str = "npy"
    scale: float = 0.0

    def __post_init__(self) -> None:
        """The limits every file obeys, checked when writing and when reading."""
        if not (self.scale == 0 or MIN_SCALE <= self.scale <= MAX_SCALE):
            raise InputError("invalid intensity scale in a codec header")
        if not 1 <= self.bits <= np.dtype(self.dtype).itemsize * 8:
            raise InputError(f"bit depth {self.bits} for {self.dtype}")
        sides = (self.slices, self.height, self.width)
        if not all(1 <= n <= MAX_SIDE for n in sides):
            raise InputError(f"absurd size {'×'.join(map(str, sides))} (each side at most {MAX_SIDE})")
        if self.layout == 0 and self.slices != 1:
            raise InputError("2-D layout with several slices")
        if self.layout == 3 and (self.slices != 3 or self.bits > COLOUR_MAX_BITS):
            raise InputError(f"YCoCg layout with {self.slices} planes of {self.bits} bits")
        if self.slices * self.height * self.width > MAX_PIXELS:
            raise InputError(
                f"too large ({self.slices * self.height * self.width} pixels, limit {MAX_PIXELS})"
            )

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    @property
    def shape(self) -> tuple[int, ...]:
        if self.layout == 0:
            return (self.height, self.width)
        if self.layout == 1:
            return (self.slices, self.height, self.width)
        if self.layout == 3:
            return (self.height, self.width, 3)
        return (self.height, self.width, self.slices)


def container_overhead(slices: int) -> float:
    """Bytes of header per slice in a file of ``slices`` slices, at most (for rate budgets)."""
    fixed = _FIXED.size + 3 * _MAX_VARINT[32] + IDENTITY_BYTES + _SCALE.size + _CRC.size
    return _MAX_VARINT[32] + _CRC.size + fixed / slices


def write_container(header: Header, payloads: list[bytes]) -> bytes:
    descriptor = (
        DTYPES.index(np.dtype(header.dtype))
        | header.layout << 1
        | KINDS.index(header.kind) << 3
        | (_HAS_SCALE if header.scale else 0)
    )
    head = bytearray(_FIXED.pack(MAGIC, VERSION, descriptor, header.bits))
    for n in (header.slices, header.height, header.width):
        head += pack_varint(n)
    head += header.identity
    if header.scale:
        head += _SCALE.pack(header.scale)
    for payload in payloads:
        head += pack_varint(len(payload)) + _CRC.pack(zlib.crc32(payload))
    return bytes(head) + _CRC.pack(zlib.crc32(head)) + b"".join(payloads)


def read_header(data: bytes) -> tuple[Header, list[bytes]]:
    """Validate ``data`` completely and split it into the header and the slice payloads."""
    if len(data) < _FIXED.size:
        raise InputError("not a recon codec file (too short)")
    magic, version, descriptor, bits = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise InputError("not a recon codec file (bad magic bytes)")
    if version != VERSION:
        raise InputError(f"unsupported codec file version {version} (this recon reads {VERSION})")
    layout, kind = (descriptor >> 1) & 3, (descriptor >> 3) & 7
    if descriptor & 0x80 or layout not in LAYOUTS or kind >= len(KINDS):
        raise InputError("corrupt codec file header (unknown layout or kind)")
    position = _FIXED.size
    sides = []
    for _ in range(3):
        side, position = read_varint(data, position)
        sides.append(side)
    identity = data[position : position + IDENTITY_BYTES]
    position += IDENTITY_BYTES
    scale = 0.0
    if descriptor & _HAS_SCALE:
        if len(data) < position + _SCALE.size:
            raise InputError("truncated codec file (header cut short)")
        (scale,) = _SCALE.unpack_from(data, position)
        position += _SCALE.size
        if not scale > 0:
            raise InputError("corrupt codec file header (intensity scale not positive)")
    try:
        header = Header(DTYPES[descriptor & 1], bits, layout, *sides, identity, KINDS[kind], scale)
    except InputError as exc:
        raise InputError(f"corrupt codec file header ({exc})") from None
    if len(identity) < IDENTITY_BYTES or len(data) < position + header.slices * (1 + _CRC.size):
        raise InputError("truncated codec file (header cut short)")
    entries = []
    for _ in range(header.slices):
        length, position = read_varint(data, position)
        if len(data) < position + _CRC.size:
            raise InputError("truncated codec file (header cut short)")
        entries.append((length, _CRC.unpack_from(data, position)[0]))
        position += _CRC.size
    if len(data) < position + _CRC.size:
        raise InputError("truncated codec file (header cut short)")
    if zlib.crc32(data[:position]) != _CRC.unpack_from(data, position)[0]:
        raise InputError("corrupt codec file (header checksum mismatch)")
    start = position + _CRC.size
    if start + sum(n for n, _ in entries) != len(data):
        raise InputError("truncated or padded codec file (payload lengths do not match the file size)")
    payloads = []
    for n, crc in entries:
        payload = data[start : start + n]
        if zlib.crc32(payload) != crc:
            raise InputError("corrupt codec file (payload checksum mismatch)")
        payloads.append(payload)
        start += n
    return header, payloads
