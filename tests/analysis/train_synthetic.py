"""A small synthetic image set for the training tests: the class is the colour of a small
object; the background colour, the object's shape, position and size are nuisance.

An untrained network's pooled features follow the background (most of the pixels), so it
retrieves poorly; training teaches it to look at the object's colour instead, which also
separates the colours it never saw: the sorted class names interleave the hues, so the test
half (the second half of the names) has hues between the training ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# hue (degrees) per class; sorted names: a..d train (0, 90, 180, 270), e..h test (in between)
CLASSES = {"a_red": 0, "b_lime": 90, "c_cyan": 180, "d_violet": 270,
           "e_orange": 45, "f_green": 135, "g_azure": 225, "h_pink": 315}
SHAPES = tuple(CLASSES)


def _hue_rgb(hue: float, value: float = 1.0) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb((hue % 360) / 360, 1.0, value))


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    colour = _hue_rgb(CLASSES[shape] + rng.uniform(-8, 8), rng.uniform(0.8, 1.0))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    # a second background colour on one side of a random line: large-scale nuisance
    angle = rng.uniform(0, 2 * math.pi)
    ox, oy = size / 2 + size * math.cos(angle) * 2, size / 2 + size * math.sin(angle) * 2
    px, py = -math.sin(angle) * size * 3, math.cos(angle) * size * 3
    draw.polygon([(size / 2 + px, size / 2 + py), (size / 2 - px, size / 2 - py), (ox - px, oy - py), (ox + px, oy + py)],
                 fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    r = size * rng.uniform(0.16, 0.22)
    cx, cy = (size / 2 + rng.uniform(-0.15, 0.15) * size for _ in range(2))
    box = [cx - r, cy - r, cx + r, cy + r]
    kind = rng.integers(0, 3)
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    return image


def write_image_folder(root: Path, per_class: int = 12, size: int = 40, seed: int = 0,
                       shapes=SHAPES) -> Path:
    """root/<shape>/<k>.png"""
    rng = np.random.default_rng(seed)
    for shape in shapes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            draw_shape(shape, size, rng).save(folder / f"{k:03d}.png")
    return root


def write_render_set(root: Path, per_class: int = 12, size: int = 40, seed: int = 0, shapes=SHAPES) -> Path:
    """The same images as a render set in the DESIGN.md layout (dataset.json, metadata.csv with
    `file_name` first, images/NNNNNN.png); the class is the `shape` column."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in shapes:
        for _ in range(per_class):
            index = len(rows)
            name = f"images/{index:06d}.png"
            draw_shape(shape, size, rng).save(root / name)
            rows.append({"file_name": name, "index": index, "seed": index, "car_id": f"car-{index % 5}",
                         "subset": "", "mask_file_name": "", "shape": shape})
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = {"format": "carprobe-render-set", "name": root.name, "count": len(rows), "columns": columns,
            "factors": ["shape"], "spec_hash": "synthetic"}
    (root / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    return root
