"""core.mask_exr: the part-id pass read straight from the EXR the compositor writes.

The files here are written by a minimal OpenEXR writer following the format's layout, so the
reader is checked against the specification, not against itself; tests/blender checks the
masks of real renders."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from blender_addon.core.image_files import DamagedImage
from blender_addon.core.mask_exr import read_id_exr


def _attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def write_exr(path, pixels: np.ndarray, pixel_type: int = 2, compression: int = 0, channels=("V",),
              line_order: int = 0) -> None:
    """A single-part scanline EXR of `pixels` (rows top first: EXR's y grows downwards)."""
    height, width = pixels.shape
    chlist = b"".join(c.encode() + b"\0" + struct.pack("<iB3xii", pixel_type, 0, 1, 1) for c in channels) + b"\0"
    header = (b"\x76\x2f\x31\x01" + bytes([2, 0, 0, 0])
              + _attr("channels", "chlist", chlist)
              + _attr("compression", "compression", bytes([compression]))
              + _attr("dataWindow", "box2i", struct.pack("<4i", 0, 0, width - 1, height - 1))
              + _attr("displayWindow", "box2i", struct.pack("<4i", 0, 0, width - 1, height - 1))
              + _attr("lineOrder", "lineOrder", bytes([line_order]))
              + _attr("Date", "string", b"2026/12/01 00:00:00") + b"\0")
    dtype = "<f2" if pixel_type == 1 else "<f4"
    lines = []
    for y in range(height):
        data = np.repeat(pixels[y:y + 1], len(channels), axis=0).astype(dtype).tobytes()
        lines.append(struct.pack("<ii", y, len(data)) + data)
    offsets, pos = [], len(header) + 8 * height
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    path.write_bytes(header + struct.pack(f"<{height}Q", *offsets) + b"".join(lines))


def ids_image(width=7, height=5) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 7, size=(height, width)).astype(np.float32)


@pytest.mark.parametrize("pixel_type", [1, 2])
def test_rows_come_back_top_first_with_exact_ids(tmp_path, pixel_type):
    ids = ids_image()
    ids[0, 0], ids[-1, -1] = 6, 1  # corners tell a flip or a transpose
    write_exr(tmp_path / "m", ids, pixel_type)
    rows = read_id_exr(tmp_path / "m", 7, 5)
    assert [list(r) for r in rows] == ids.astype(int).tolist()


def test_ids_are_rounded_and_clipped_to_a_byte(tmp_path):
    values = np.array([[0.49, 0.51, 2.4999, 300.0, -3.0]], dtype=np.float32)
    write_exr(tmp_path / "m", values)
    assert list(read_id_exr(tmp_path / "m", 5, 1)[0]) == [0, 1, 2, 255, 0]


@pytest.mark.parametrize("change, words", [
    (dict(compression=3), "compressed"),
    (dict(channels=("B", "G", "R")), "one HALF or FLOAT channel"),
    (dict(pixel_type=0), "one HALF or FLOAT channel"),
    (dict(line_order=1), "increasing y"),
])
def test_other_layouts_are_refused_by_name(tmp_path, change, words):
    write_exr(tmp_path / "m", ids_image(), **change)
    with pytest.raises(DamagedImage, match=words):
        read_id_exr(tmp_path / "m", 7, 5)


def test_a_mask_of_another_size_is_refused(tmp_path):
    write_exr(tmp_path / "m", ids_image())
    with pytest.raises(DamagedImage, match="7x5, expected 8x5"):
        read_id_exr(tmp_path / "m", 8, 5)


@pytest.mark.parametrize("keep", [3, 20, 60, -1])
def test_truncated_files_are_refused(tmp_path, keep):
    write_exr(tmp_path / "whole", ids_image())
    data = (tmp_path / "whole").read_bytes()
    (tmp_path / "m").write_bytes(data[:keep])
    with pytest.raises(DamagedImage):
        read_id_exr(tmp_path / "m", 7, 5)


def test_a_png_is_not_read_as_exr(tmp_path):
    (tmp_path / "m").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DamagedImage, match="not an OpenEXR"):
        read_id_exr(tmp_path / "m", 7, 5)


def test_a_header_attribute_running_past_the_end_is_named(tmp_path):
    write_exr(tmp_path / "whole", ids_image())
    data = (tmp_path / "whole").read_bytes()
    at = data.index(b"channels\0chlist\0") + len(b"channels\0chlist\0")
    (tmp_path / "m").write_bytes(data[:at] + struct.pack("<i", 10**6) + data[at + 4:])
    with pytest.raises(DamagedImage, match="attribute channels"):
        read_id_exr(tmp_path / "m", 7, 5)


def test_a_channel_list_without_its_end_is_damaged_not_a_crash(tmp_path):
    write_exr(tmp_path / "whole", ids_image())
    data = bytearray((tmp_path / "whole").read_bytes())
    at = data.index(b"channels\0chlist\0") + len(b"channels\0chlist\0") + 4
    data[at:at + 2] = b"VV"  # the channel name loses its terminator inside the list
    data[at + 1:at + 19] = b"V" * 18
    (tmp_path / "m").write_bytes(bytes(data))
    with pytest.raises(DamagedImage):
        read_id_exr(tmp_path / "m", 7, 5)
