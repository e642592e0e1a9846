"""The ``.rcz`` container: a validated header, then one range-coded payload per slice.

Layout (little endian)::

    magic  b"\\x89RCZ"  | version u8 | dtype u8 (1 uint8, 2 uint16) | bits u8 | layout u8
    slices u32 | height u32 | width u32 | codec identity 16 bytes
    source kind u8 (0 npy, 1 png, 2 tiff, 3 dicom, 4 h5) | scale f64 (> 0; 0: integer data)
    per slice: payload length u32, payload CRC-32 u32
    header CRC-32 u32 (of everything above)
    payloads, back to back

``layout`` says how slices map back to the array: 0 ``(H, W)``, 1 ``(S, H, W)``, 2 ``(H, W, C)``.
``scale`` is non-zero for float images (fastMRI h5 targets) that were coded as 16-bit integers:
the decoded values are ``integers × scale`` in float32. ``kind`` is the file type the data came from,
so that decoding a folder writes the same kind back.
:func:`read_header` checks every field, the header checksum, that the payload lengths add up to the
file's size and every payload's checksum, before anything is allocated or decoded: a corrupted,
truncated or hostile file is an :class:`InputError`, never a crash or a huge allocation.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from recon.errors import InputError

MAGIC = b"\x89RCZ"
VERSION = 2  # 2: adaptive token probabilities in the interpolated passes, palette as gaps
DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16)}
LAYOUTS = (0, 1, 2)
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # 256 Mpixel per file
KINDS = ("npy", "png", "tiff", "dicom", "h5")
_FIXED = struct.Struct("<4sBBBBIII16sBd")
_ENTRY = struct.Struct("<II")


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
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise InputError("invalid intensity scale in a codec header")
        if not 1 <= self.bits <= np.dtype(self.dtype).itemsize * 8:
            raise InputError(f"bit depth {self.bits} for {self.dtype}")
        sides = (self.slices, self.height, self.width)
        if not all(1 <= n <= MAX_SIDE for n in sides):
            raise InputError(f"absurd size {'×'.join(map(str, sides))} (each side at most {MAX_SIDE})")
        if self.layout == 0 and self.slices != 1:
            raise InputError("2-D layout with several slices")
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
        return (self.height, self.width, self.slices)


def container_overhead(slices: int) -> float:
    """Bytes of header per slice in a file of ``slices`` slices."""
    return _ENTRY.size + (_FIXED.size + 4) / slices


def write_container(header: Header, payloads: list[bytes]) -> bytes:
    code = {v: k for k, v in DTYPES.items()}[np.dtype(header.dtype)]
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        code,
        header.bits,
        header.layout,
        header.slices,
        header.height,
        header.width,
        header.identity,
        KINDS.index(header.kind),
        header.scale,
    )
    table = b"".join(_ENTRY.pack(len(p), zlib.crc32(p)) for p in payloads)
    head = fixed + table
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(payloads)


def read_header(data: bytes) -> tuple[Header, list[bytes]]:
    """Validate ``data`` completely and split it into the header and the slice payloads."""
    if len(data) < _FIXED.size + 4:
        raise InputError("not a recon codec file (too short)")
    magic, version, code, bits, layout, slices, height, width, identity, kind, scale = _FIXED.unpack_from(
        data
    )
    if magic != MAGIC:
        raise InputError("not a recon codec file (bad magic bytes)")
    if version != VERSION:
        raise InputError(f"unsupported codec file version {version} (this recon reads {VERSION})")
    if code not in DTYPES or layout not in LAYOUTS or kind >= len(KINDS):
        raise InputError("corrupt codec file header (unknown dtype, layout or kind)")
    try:
        header = Header(DTYPES[code], bits, layout, slices, height, width, identity, KINDS[kind], scale)
    except InputError as exc:
        raise InputError(f"corrupt codec file header ({exc})") from None
    table_end = _FIXED.size + slices * _ENTRY.size
    if len(data) < table_end + 4:
        raise InputError("truncated codec file (header cut short)")
    (header_crc,) = struct.unpack_from("<I", data, table_end)
    if zlib.crc32(data[:table_end]) != header_crc:
        raise InputError("corrupt codec file (header checksum mismatch)")
    entries = [_ENTRY.unpack_from(data, _FIXED.size + i * _ENTRY.size) for i in range(slices)]
    start = table_end + 4
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
