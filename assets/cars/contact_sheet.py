"""Render docs/cars.png: every shipped car model, one tile each, labelled with its id.

    PYTHONPATH=. /work/main/.venv/bin/python assets/cars/contact_sheet.py [--size 240] [--samples 16]

Each tile is carprobe's own render of `car.body = "<id>"` (Cycles, sun and sky, camera azimuth
30°: the front-left three-quarter view, the same side of every model), tiled with Pillow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=240, help="tile width in pixels (height is 5/8 of it)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "cars.png")
    ap.add_argument("--azimuth", type=float, default=30.0)
    args = ap.parse_args(argv)

    import bpy
    from PIL import Image, ImageDraw

    from blender_addon.blender.render import make_image_renderer
    from blender_addon.core.car_models import SHIPPED_IDS
    from blender_addon.core.sampling import sample_row
    from blender_addon.core.spec import parse_spec

    w, h = args.size, args.size * 5 // 8
    spec = parse_spec({
        "schema": 1, "name": "cars", "design": {"kind": "grid"},
        "render": {"engine": "cycles", "width": w, "height": h, "samples": args.samples, "denoise": True},
        "car": {"body": {"values": list(SHIPPED_IDS)}},
        "paint": {"color": "red"},
        "camera": {"azimuth": args.azimuth, "elevation": 12.0, "distance": 9.5},
        "lighting": {"kind": "sun", "sun_azimuth": 60.0, "sun_elevation": 50.0},
        "background": {"kind": "color", "color": "hsv(0.6,0.05,0.85)"},
    }, ROOT)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    render = make_image_renderer(spec)
    cols = args.columns
    rows = (len(SHIPPED_IDS) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    with tempfile.TemporaryDirectory() as tmp:
        for i, car in enumerate(SHIPPED_IDS):
            path = Path(tmp) / f"{car}.png"
            render(sample_row(spec, i), str(path))
            tile = Image.open(path).convert("RGB")
            ImageDraw.Draw(tile).text((6, 4), car, fill=(20, 20, 20))
            sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
            print(car, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
