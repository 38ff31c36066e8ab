"""`carprobe effects SET --models … --out DIR`: interventional factor effects.

For every factor, images that differ in that factor alone (matched pairs, found from the
metadata) are compared with images of two different cars with everything else equal: the effect
ratio (1 = the factor moves the embedding as far as swapping the car), with 95% intervals from a
bootstrap over cars, and how often the car is still retrieved after the change. Writes
effects.csv, effects_response.csv, effects.json and the figures (PNG) into --out; details in
analysis.effects.
"""

from __future__ import annotations

import argparse

from ._embeddings import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--factors", nargs="+", default=None,
                        help="only these factor columns (default: the set's varying factors)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap replicates (resampling car identities) for the 95%% intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def run(args: argparse.Namespace) -> int:
    import json

    from blender_addon.core.errors import CarprobeError
    from blender_addon.core.render_set import atomic_write_bytes, atomic_write_text

    from ..data import RenderSetData
    from ..effects import EFFECTS_CSV, RESPONSE_CSV, compute_effects, find_pairs, require_pairs, summary_lines
    from ..effects.figures import all_figures, model_roles
    from ..effects.report_section import MANIFEST
    from ..report.figures import model_colors
    from ._embeddings import embed_models, out_dir, write_csv

    if args.bootstrap < 1:
        raise CarprobeError(f"--bootstrap {args.bootstrap}: must be >= 1")
    data = RenderSetData(args.set)  # pairs are checked before anything is embedded
    metadata = data.metadata
    factors = args.factors if args.factors is not None else [
        f for f in data.factors if f in metadata and metadata[f].nunique(dropna=False) > 1]
    if not factors:
        raise CarprobeError(f"render set {args.set}: no factor varies; effects need at least one factor with two "
                            "or more values")
    plan = find_pairs(metadata, factors)
    require_pairs(plan)
    print("matched pairs: " + ", ".join(f"{f} {len(p)}" for f, p in plan.factors.items())
          + f"; identity yardstick {len(plan.identity)} ({plan.cars_in(plan.identity)} cars)")

    loaded: dict = {}
    data, embeddings, _ = embed_models(args, loaded)
    models = {name: (x, loaded[name].distance, bool(loaded[name].normalize)) for name, x in embeddings.items()}
    effects, response = compute_effects(models, metadata, plan, n_boot=args.bootstrap, seed=args.seed)
    out = out_dir(args, data)
    write_csv(effects, out / EFFECTS_CSV)
    write_csv(response, out / RESPONSE_CSV)
    entries = [{"name": name, "ref": str(ref), "distance": loaded[name].distance,
                "normalize": bool(loaded[name].normalize),
                "random_init": bool(args.random_init and str(ref).startswith("torchvision:"))}
               for name, ref in zip(embeddings, args.models)]
    atomic_write_text(out / MANIFEST, json.dumps({"models": entries, "bootstrap": args.bootstrap,
                                                  "seed": args.seed}, indent=1) + "\n")
    names = list(embeddings)
    for stale in out.glob("effects_*.png"):  # figures of factors an earlier run measured
        stale.unlink()
    for name, png in all_figures(effects, response, names, model_colors(names), model_roles(entries)).items():
        atomic_write_bytes(out / name, png)
    ratios = effects[effects["metric"] == "effect_ratio"]
    print("effect ratio [95% interval] (1 = as far as a change of car):")
    for _, row in ratios.iterrows():
        print(f"  {row['model']:<20} {row['factor']:<24} {row['value']:7.3f} [{row['ci_low']:.3f}, "
              f"{row['ci_high']:.3f}]  ({int(row['n'])} pairs)")
    print("\n".join(summary_lines(out)))
    print(f"wrote {EFFECTS_CSV}, {RESPONSE_CSV}, {MANIFEST} and figures to {out}")
    return 0
