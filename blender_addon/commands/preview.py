"""`carprobe preview SPEC --index 17 --out x.png`: render one sample to an image (no render set)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core import render_set
from ..core.errors import CarprobeError
from ..core.image_files import DamagedImage, finish_image
from ..core.sampling import IMAGE_SUFFIX, sample_row
from ..core.spec import load_spec
from . import common

SUFFIXES = {"png": (".png",), "jpeg": (".jpg", ".jpeg")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec (TOML)")
    parser.add_argument("--index", type=int, default=0, help="sample index (default 0)")
    parser.add_argument("--out", required=True, help="image file to write (suffix as render.format; its folder is created)")
    parser.add_argument("--mask", help="also write the part-id mask to this PNG")


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    row = sample_row(spec, args.index)  # CarprobeError when out of range
    out = Path(args.out)
    image_format = spec.settings["render.format"]
    if out.suffix.lower() not in SUFFIXES[image_format]:
        raise CarprobeError(f"--out {args.out}: this spec renders {image_format} (render.format); use a "
                            f"{' or '.join(SUFFIXES[image_format])} file name")
    mask = Path(args.mask) if args.mask else None
    if mask is not None and mask.suffix.lower() != ".png":
        raise CarprobeError(f"--mask {args.mask}: masks are PNG; use a .png file name")
    for flag, path in (("--out", out), ("--mask", mask)):
        if path is not None:
            common.output_folder(path.parent, flag)

    from ..blender.render import make_image_renderer  # bpy only here
    tmp_out = render_set.temp_path(out, IMAGE_SUFFIX["png"])
    tmp_mask = render_set.temp_path(mask, IMAGE_SUFFIX["png"]) if mask is not None else None
    try:
        make_image_renderer(spec)(row, tmp_out, tmp_mask)
        for tmp, final in ((tmp_out, out), (tmp_mask, mask)):
            if tmp is not None:
                try:
                    finish_image(tmp)  # a full disk can give a short file without an error
                except DamagedImage as exc:
                    raise CarprobeError(f"preview: {final} came out damaged ({exc}); is the disk full?") from None
        os.replace(tmp_out, out)
        if mask is not None:
            os.replace(tmp_mask, mask)
    finally:
        for tmp in (tmp_out, tmp_mask):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    print(f"sample {args.index} of {spec.name} → {out}" + (f" (mask {mask})" if mask else ""))
    print(f"  car {row['car_id']}" + (f", subset {row['subset']}" if row["subset"] else ""))
    for path in spec.varying_factors:
        print(f"  {path} = {row[path]}")
    return 0
