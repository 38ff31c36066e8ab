"""A tiny render set drawn with PIL instead of Blender (same files, same metadata, same code path).

`render_synthetic_set(spec_path_or_toml, out)` writes images/, masks/, metadata.csv and
dataset.json through blender_addon.core.render_set.render_samples, with a renderer that paints
a car-like shape whose look follows the row's factors (paint colour, background colour, body,
camera azimuth, sun azimuth), so embeddings really do depend on the factors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from blender_addon.core import spec as spec_module
from blender_addon.core.render_set import render_samples

QUICK_TOML = """
schema = 1
name = "tiny"
description = "test set: 2 identities x (paint colour, camera azimuth, background colour)"

[design]
kind = "one_at_a_time"
across = ["car.body"]
seed = 3

[render]
width = 48
height = 48
masks = true

[car]
body = { values = ["sedan", "suv"] }

[paint]
color = { values = ["red", "blue", "yellow"] }

[camera]
azimuth = { values = [0.0, 90.0, 180.0] }

[background]
kind = "color"
color = { values = ["gray", "teal"] }
"""

_BODY_HEIGHT = {"sedan": 0.28, "hatchback": 0.32, "suv": 0.42, "coupe": 0.24, "wagon": 0.33, "van": 0.5,
                "pickup": 0.36, "model": 0.3}


def _srgb(linear: float) -> int:
    linear = min(max(float(linear), 0.0), 1.0)
    value = 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055
    return int(round(255 * value))


def synthetic_renderer(width: int, height: int):
    def render_image(row: dict, image_path: Path, mask_path: Path | None) -> None:
        bg = tuple(_srgb(row.get(f"background.color_{c}", 0.3)) for c in "rgb")
        paint = tuple(_srgb(row.get(f"paint.color_{c}", 0.5)) for c in "rgb")
        image = Image.new("RGB", (width, height), bg)
        mask = Image.new("L", (width, height), 0)
        draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
        azimuth = math.radians(float(row.get("camera.azimuth", 0.0)))
        half_length = 0.18 + 0.22 * abs(math.sin(azimuth))  # side view: long; front view: short
        body_h = _BODY_HEIGHT.get(row.get("car.body", "sedan"), 0.3)
        cx, ground = width / 2, height * 0.72
        box = [cx - half_length * width, ground - body_h * height, cx + half_length * width, ground]
        draw.rectangle(box, fill=paint)
        draw_mask.rectangle(box, fill=1)
        # "windows": a darker band whose side follows the camera azimuth
        shift = 0.25 * math.cos(azimuth) * half_length * width
        glass = [cx - 0.5 * half_length * width + shift, box[1] + 2, cx + 0.5 * half_length * width + shift,
                 box[1] + body_h * height * 0.45]
        draw.rectangle(glass, fill=(40, 50, 60))
        draw_mask.rectangle(glass, fill=2)
        for wx in (box[0] + 0.2 * (box[2] - box[0]), box[0] + 0.8 * (box[2] - box[0])):
            r = 0.07 * height
            draw.ellipse([wx - r, ground - r, wx + r, ground + r], fill=(15, 15, 15))
            draw_mask.ellipse([wx - r, ground - r, wx + r, ground + r], fill=3)
        # sun direction: a brighter edge on one side
        sun = math.radians(float(row.get("lighting.sun_azimuth", 45.0)))
        pixels = np.asarray(image, dtype=np.float32)
        ramp = np.linspace(-1, 1, width)[None, :, None] * math.sin(sun) * 25.0
        pixels = np.clip(pixels + ramp, 0, 255).astype(np.uint8)
        rng = np.random.default_rng(int(row["seed"]) % (2 ** 32))
        pixels = np.clip(pixels.astype(np.int16) + rng.integers(-6, 7, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(image_path)
        if mask_path is not None:
            mask.save(mask_path)

    return render_image


def render_synthetic_set(spec_source: str | Path, out: str | Path) -> Path:
    """Render a spec (a .toml path, or TOML text) with the PIL renderer into `out`."""
    import tomllib

    text = Path(spec_source).read_text() if Path(str(spec_source)).suffix == ".toml" else str(spec_source)
    spec = spec_module.parse_spec(tomllib.loads(text), None, check_files=False)
    width, height = spec.settings["render.width"], spec.settings["render.height"]
    render_samples(spec, out, synthetic_renderer(width, height), progress=False, blender_version="synthetic")
    return Path(out)
