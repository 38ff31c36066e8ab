"""Small render sets drawn with PIL (no Blender) through the core render loop, so they are
real render sets in the DESIGN.md format; used by test_data.py and test_embed.py."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from blender_addon.core.render_set import render_samples
from blender_addon.core.spec import parse_spec

SPEC = {
    "schema": 1,
    "name": "embed-test",
    "design": {"kind": "grid"},
    "render": {"width": 40, "height": 32, "masks": True},
    "paint": {"color": {"values": ["red", "blue", "#00ff00"]}},
    "camera": {"azimuth": {"values": [0.0, 90.0]}},
}  # grid 3 colours x 2 azimuths = 6 images


def draw(row: dict, image_path: Path, mask_path: Path | None) -> None:
    """A box in the row's paint colour, wider in side view; the mask marks it as part 1."""
    colour = tuple(int(255 * row[f"paint.color_{c}"] ** (1 / 2.2)) for c in "rgb")
    image = Image.new("RGB", (40, 32), (90, 90, 90))
    mask = Image.new("L", (40, 32), 0)
    half = 14 if row["camera.azimuth"] == 90.0 else 7
    box = [20 - half, 10, 20 + half, 26]
    ImageDraw.Draw(image).rectangle(box, fill=colour)
    ImageDraw.Draw(mask).rectangle(box, fill=1)
    image.save(image_path)
    if mask_path is not None:
        mask.save(mask_path)


def write_render_set(root: Path, spec: dict | None = None) -> Path:
    spec_obj = parse_spec(spec or SPEC, None, check_files=False)
    render_samples(spec_obj, root, draw, progress=False, blender_version="test")
    return Path(root)
