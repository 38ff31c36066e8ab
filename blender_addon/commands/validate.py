"""`carprobe validate SPEC`: check a dataset spec; print its design, sample count and factors."""

from __future__ import annotations

import argparse

from ..core.car_models import spec_model_warnings
from ..core.sampling import full_count, sample_count
from ..core.spec import load_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec (TOML)")


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)  # SpecError lists every problem; the CLI exits 2
    print(describe(spec))
    for warning in spec_model_warnings(spec):  # renders, but the masks or paint would be wrong
        print(f"warning: {warning}")
    return 0


def describe(spec) -> str:
    """A short human summary of a valid spec."""
    design = spec.design
    count = sample_count(spec)
    extra = []
    if design == "one_at_a_time" and spec.settings["design.across"]:
        extra.append("across " + ", ".join(spec.settings["design.across"]))
    if design != "random" and count < full_count(spec):
        extra.append(f"truncated from {full_count(spec)} by design.count")
    if design == "random":
        extra.append(f"seed {spec.settings['design.seed']}")
    lines = [
        f"spec: {spec.name} (valid)",
        f"design: {design}" + (f" ({'; '.join(extra)})" if extra else ""),
        f"samples: {count}",
        f"render: {spec.settings['render.engine']} {spec.settings['render.width']}x"
        f"{spec.settings['render.height']}, {spec.settings['render.samples']} samples, "
        f"{spec.settings['render.format']}{', masks' if spec.settings['render.masks'] else ''}",
        "varying factors:" + ("" if spec.varying_factors else " none"),
    ]
    for path in spec.varying_factors:
        factor = spec.factor(path)
        if factor.form in ("uniform", "normal"):
            what = f"{factor.form} {list(factor.args)}"
        else:
            what = f"{len(factor.values)} values" + (f" ({factor.form})" if factor.form != "values" else "")
        lines.append(f"  {path}: {what}")
    return "\n".join(lines)
