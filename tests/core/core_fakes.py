"""Test doubles for the bpy-free core tests: a tiny stdlib PNG writer and a fake renderer that
stands in for Blender in the render loop."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def write_png(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> None:
    """A solid-colour 8-bit RGB PNG (enough to be a real, decodable image file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


class FakeRenderer:
    """render_image stand-in: writes a PNG whose colour encodes the row index; records calls;
    can raise a given exception when it reaches a given call number."""

    def __init__(self, fail_at: int | None = None, error: BaseException | None = None):
        self.calls: list[int] = []
        self.paths: list[tuple[Path, Path | None]] = []
        self.fail_at = fail_at
        self.error = error

    def __call__(self, row: dict, image_path: Path, mask_path: Path | None) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            # a half-written temp file, as a killed renderer would leave it
            Path(image_path).write_bytes(b"\x89PNG partial")
            raise self.error
        self.calls.append(row["index"])
        self.paths.append((Path(image_path), mask_path))
        index = row["index"]
        write_png(image_path, 4, 3, (index % 256, (index * 7) % 256, 200))
        if mask_path is not None:
            write_png(mask_path, 4, 3, (1, 1, 1))


SMALL_SPEC = {
    "schema": 1,
    "name": "small",
    "design": {"kind": "one_at_a_time", "across": ["car.shape_seed"]},
    "render": {"width": 64, "height": 48},
    "car": {"shape_seed": {"values": [0, 1]}},
    "paint": {"color": {"values": ["red", "blue", "#00ff00"]}},
    "camera": {"azimuth": {"range": [0, 90, 45]}},
}  # 2 contexts × (3 colours + 3 azimuths) = 12 images
