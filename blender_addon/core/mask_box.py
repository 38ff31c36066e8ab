"""The car's 2-D bounding box in a part-id mask (stdlib only: it runs inside Blender, where
there is no PIL).

The renderer takes the box from the ids it has in memory (rows_bbox); render sets without a
journaled box read it from the mask file (mask_bbox).

Box convention (numpy slicing): ``bbox_x0, bbox_y0`` are the first column and row holding a car
pixel, ``bbox_x1, bbox_y1`` one past the last, so ``mask[y0:y1, x0:x1]`` is the box and its
size is ``(x1 - x0, y1 - y0)``; (0, 0) is the top-left pixel. Car pixels are every part but
background and ground. An image without a car pixel has no box (None).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from . import schema

NOT_CAR = (schema.MASK_PARTS.index("background"), schema.MASK_PARTS.index("ground"))
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type → samples per pixel (8-bit, no palette)


def read_png_channel0(path: str | Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows) of the first channel of an 8-bit grey/RGB(A) PNG, top row first.

    ValueError for anything else (16-bit, palette, interlaced, not a PNG)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: PNG without a header")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in _CHANNELS or interlace:
        raise ValueError(f"{path}: only 8-bit, non-interlaced grey or RGB(A) PNG masks are read")
    bpp = _CHANNELS[color]
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, previous = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind:  # carprobe's own masks are unfiltered (kind 0): this slow path is for others
            line = _unfilter(kind, bytearray(line), previous, bpp)
        previous = line
        rows.append(line[::bpp] if bpp > 1 else line)
    return width, height, rows


def _unfilter(kind: int, line: bytearray, previous: bytes, bpp: int) -> bytes:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            up_left = previous[i - bpp] if i >= bpp else 0
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        else:
            raise ValueError(f"PNG filter type {kind} is not defined")
    return bytes(line)


def mask_bbox(path: str | Path) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the car pixels of a part-id mask file (see the module docstring), or None."""
    return rows_bbox(read_png_channel0(path)[2])


def rows_bbox(rows: list[bytes]) -> tuple[int, int, int, int] | None:
    """mask_bbox of a mask in memory: one bytes object of part ids per row, top row first."""
    # bytes.translate maps every non-car id to 0 in C, so each row is scanned at C speed
    table = bytes(0 if v in NOT_CAR else 1 for v in range(256))
    x0 = y0 = x1 = y1 = None
    for y, row in enumerate(rows):
        car = row.translate(table)
        first = car.find(1)
        if first < 0:
            continue
        last = car.rfind(1)
        y0 = y if y0 is None else y0
        y1 = y + 1
        x0 = first if x0 is None else min(x0, first)
        x1 = last + 1 if x1 is None else max(x1, last + 1)
    return None if y0 is None else (x0, y0, x1, y1)
