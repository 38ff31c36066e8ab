"""Read the part-id pass that Blender's File Output node writes, without Blender (no bpy).

The render glue asks the compositor for a one-channel, uncompressed, scanline OpenEXR (the
simplest layout the format has). Parsing that directly costs a tenth of a millisecond, where
loading it as a Blender image (a data-block, colour management, a float RGBA copy) cost about
2.6 ms per image: most of what masks added to a 64 px render (bench/render.py).

Layout (OpenEXR 2, single part): magic, version, header attributes (name, type, size, value)
up to an empty name, one 64-bit offset per scanline, then per scanline: y (int32), byte count
(int32) and the pixels. numpy ships with Blender and with the bpy wheel.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .image_files import DamagedImage

EXR_MAGIC = b"\x76\x2f\x31\x01"
_PIXEL_TYPES = {1: ("<f2", 2), 2: ("<f4", 4)}  # HALF, FLOAT (UINT ids are not what Blender writes)
_NO_COMPRESSION = 0
_INCREASING_Y = 0


def read_id_exr(path: str | os.PathLike, width: int, height: int) -> list[bytes]:
    """Part ids (rounded, clipped to 0..255) of a one-channel uncompressed scanline EXR of
    `width` x `height`, one bytes object per row, top row first. DamagedImage names what is
    wrong with any other file (truncated, compressed, several channels, another size)."""
    import numpy as np

    data = Path(path).read_bytes()
    if not data.startswith(EXR_MAGIC):
        raise DamagedImage(f"{path}: not an OpenEXR file")
    if len(data) < 8 or data[4] != 2 or data[5:8] != b"\x00\x00\x00":
        raise DamagedImage(f"{path}: only single-part scanline OpenEXR 2 files are read")
    header, pos = _header(data, 8, path)
    channels = _channels(header.get(b"channels", b""), path)
    if len(channels) != 1 or channels[0] not in _PIXEL_TYPES:
        raise DamagedImage(f"{path}: expected one HALF or FLOAT channel, found pixel types {channels}")
    if header.get(b"compression") != bytes([_NO_COMPRESSION]):
        raise DamagedImage(f"{path}: compressed EXR; the mask pass must be written uncompressed")
    if header.get(b"lineOrder", bytes([_INCREASING_Y])) != bytes([_INCREASING_Y]):
        raise DamagedImage(f"{path}: scanlines not in increasing y order")
    x0, y0, x1, y1 = struct.unpack("<4i", header.get(b"dataWindow", b"\0" * 16)[:16])
    if (x1 - x0 + 1, y1 - y0 + 1) != (width, height):
        raise DamagedImage(f"{path}: mask is {x1 - x0 + 1}x{y1 - y0 + 1}, expected {width}x{height}")
    dtype, size = _PIXEL_TYPES[channels[0]]
    row_bytes = width * size
    table_end = pos + 8 * height
    if len(data) < table_end:
        raise DamagedImage(f"{path}: truncated in the scanline offset table")
    offsets = struct.unpack(f"<{height}Q", data[pos:table_end])
    rows = []
    for line, offset in enumerate(offsets):
        end = offset + 8 + row_bytes
        if end > len(data):
            raise DamagedImage(f"{path}: truncated at byte {len(data)} (scanline {line} needs {end})")
        y, count = struct.unpack("<2i", data[offset:offset + 8])
        if y != y0 + line or count != row_bytes:
            raise DamagedImage(f"{path}: scanline {line} holds y {y} and {count} bytes; expected "
                               f"y {y0 + line} and {row_bytes}")
        rows.append(data[offset + 8:end])
    values = np.frombuffer(b"".join(rows), dtype=dtype).reshape(height, width)
    ids = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return [row.tobytes() for row in ids]


def _header(data: bytes, pos: int, path) -> tuple[dict[bytes, bytes], int]:
    header = {}
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise DamagedImage(f"{path}: truncated in the header")
        name, pos = data[pos:end], end + 1
        if not name:
            return header, pos
        end = data.find(b"\0", pos)  # the attribute's type name: the values read here identify themselves
        if end < 0 or end + 5 > len(data):
            raise DamagedImage(f"{path}: truncated in the header (attribute {name.decode(errors='replace')})")
        (size,) = struct.unpack("<i", data[end + 1:end + 5])
        pos = end + 5
        if size < 0 or pos + size > len(data):
            raise DamagedImage(f"{path}: truncated in the header (attribute {name.decode(errors='replace')})")
        header[name], pos = data[pos:pos + size], pos + size


def _channels(chlist: bytes, path) -> list[int]:
    """Pixel types of a chlist attribute: per channel a name, then pixel type, pLinear, 3
    reserved bytes, x and y sampling (16 bytes), and a final empty name."""
    types, pos = [], 0
    while pos < len(chlist) and chlist[pos] != 0:
        end = chlist.find(b"\0", pos)
        if end < 0 or end + 17 > len(chlist):
            raise DamagedImage(f"{path}: damaged channel list")
        (pixel_type,) = struct.unpack("<i", chlist[end + 1:end + 5])
        types.append(pixel_type)
        pos = end + 17
    return types
