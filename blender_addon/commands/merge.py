"""`carprobe merge PARTS... --out DIR`: join render-set shards of one spec into one set."""

from __future__ import annotations

import argparse
import sys

from ..core import render_set
from . import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("parts", nargs="+", help="render-set folders (shards) of one spec")
    parser.add_argument("--out", required=True, help="folder of the merged render set")
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    merged = render_set.merge(args.parts, args.out, progress=args.progress)
    counts = merged.info["counts"]
    print(f"merged {len(args.parts)} part(s) into {args.out}: {counts['images']}/{counts['samples']} images")
    if counts["missing"]:
        print(f"note: {counts['missing']} samples are missing; render the missing shards (or rerun the "
              "interrupted ones) and merge again", file=sys.stderr)
    return 0
