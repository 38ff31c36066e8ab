"""`carprobe demo`: the main job, from nothing to a report comparing what different losses learn.

    carprobe demo --out out/demo

1. render `scenes/quick.toml` (one factor at a time) and `scenes/demo_train.toml` (many car
   identities) in Blender worker processes (bpy never shares a process with torch);
2. train small models with clearly different losses on the training set;
3. embed the quick set with every model; property silhouettes, NR-Prec, embedding-space and
   retrieval metrics; saliency maps, their correlations and mask shares;
4. write report.html and print its path and a short summary.

Every step is an ordinary carprobe command (render, train, report, saliency) called with the
same arguments a user would type, so the demo is also the worked example of the CLI. Reruns
resume: finished renders and trained runs are reused.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from blender_addon.commands import common

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_SPEC = REPO_ROOT / "scenes" / "quick.toml"
TRAIN_SPEC = REPO_ROOT / "scenes" / "demo_train.toml"
# One classification-based loss, one ranking-based loss, and the ranking loss with
# ρ-regularisation: the contrasts of Kobs et al. (classification vs ranking) and Roth et al. (ρ).
DEFAULT_RUNS = ("normalizedsoftmax", "multisimilarity", "margin:0.3")
SALIENCY_COMPARISON = "saliency_compare.csv"  # written by `carprobe saliency`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (reruns resume)")
    parser.add_argument("--quick-spec", type=Path, default=QUICK_SPEC,
                        help="the analysed set: a one-factor-at-a-time spec (default scenes/quick.toml)")
    parser.add_argument("--train-spec", type=Path, default=TRAIN_SPEC,
                        help="the training set: a spec with many car identities (default scenes/demo_train.toml)")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="LOSS[:RHO]",
                        help="models to train: a loss name, optionally with a ρ-regularisation probability "
                             f"after a colon (default: {' '.join(DEFAULT_RUNS)}; see `carprobe train --list-losses`)")
    parser.add_argument("--models", "--model", dest="models", nargs="*", default=[], metavar="MODEL",
                        help=f"extra models to compare: {common.MODEL_SPECS_HELP}")
    parser.add_argument("--render-workers", type=int, default=2, help="Blender processes per render")
    parser.add_argument("--train-limit", type=int, default=None, help="render only the first N training images")
    parser.add_argument("--quick-limit", type=int, default=None, help="render only the first N analysed images")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model")
    parser.add_argument("--arch", default="resnet18", help="backbone of the trained models")
    parser.add_argument("--image-size", type=int, default=96, help="training/analysis input size (px)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="learning rate (higher than the fine-tuning default: the demo trains from scratch)")
    parser.add_argument("--saliency-images", type=int, default=12, help="images explained per model")
    parser.add_argument("--saliency-method", default="ig", help="attribution method (see `carprobe saliency -h`)")
    common.add_device(parser)
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from blender_addon.core.errors import CarprobeError

    if args.render_workers < 1:
        raise CarprobeError(f"--render-workers {args.render_workers}: must be at least 1")
    runs = [_parse_run(text) for text in args.runs]
    if len(runs) + len(args.models) < 2:
        raise CarprobeError("--runs/--models: the demo compares models; give at least two in total")
    out = args.out
    sets, run_root, results = out / "sets", out / "runs", out / "report"
    started = time.monotonic()
    steps = 5
    _step(1, steps, f"render {args.quick_spec.name} -> {sets / 'quick'}")
    _render(args.quick_spec, sets / "quick", args.render_workers, args.quick_limit, args.progress)
    _step(2, steps, f"render {args.train_spec.name} -> {sets / 'train'}")
    _render(args.train_spec, sets / "train", args.render_workers, args.train_limit, args.progress)

    _step(3, steps, f"train {len(runs)} model(s) -> {run_root}")
    models, names = [], []
    for loss, rho in runs:
        name = loss if rho is None else f"{loss}+rho{rho:g}"
        run_dir = run_root / name
        command = ["train", "--data", str(sets / "train"), "--label", "car_id", "--loss", loss,
                   "--arch", args.arch, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--device", args.device, "--out", str(run_dir)]
        if rho is not None:
            command += ["--rho-reg", str(rho)]
        if (run_dir / "last.pt").is_file():
            command.append("--resume")  # finished runs return at once; interrupted ones continue
        print(f"  carprobe {' '.join(command)}", flush=True)
        _carprobe(command)
        models.append(str(run_dir / "best.pt"))
        names.append(name)
    for ref in args.models:
        models.append(str(ref))
        names.append(Path(ref).stem if Path(ref).suffix else Path(ref).name)

    _step(4, steps, f"embed, silhouettes, metrics -> {results}")
    shared = ["--models", *models, "--names", *names, "--device", args.device, "--out", str(results)]
    progress = [] if args.progress else ["--no-progress"]
    _carprobe(["report", str(sets / "quick"), *shared, *progress])
    _step(5, steps, f"saliency ({args.saliency_method}), model correlations, mask shares -> {results}")
    _carprobe(["saliency", str(sets / "quick"), *shared, "--method", args.saliency_method,
               "--images", str(args.saliency_images), *progress])
    _carprobe(["report", "--results", str(results), str(sets / "quick")], quiet_stdout=True)

    report = results / "report.html"
    print(f"\nreport: {report.resolve()}")
    print(summary(results))
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


def summary(results_dir: Path) -> str:
    """A few lines: each model's most and least encoded factor, and how alike their saliency is."""
    import pandas as pd

    from ..effects import summary_lines as effect_summary
    from ..report import context as R

    lines = ["summary:"]
    sil = pd.read_csv(results_dir / R.SILHOUETTES)
    sil = sil[sil["metric"] == "silhouette"]
    # The one-factor-at-a-time subsets isolate each factor; fall back to the whole set otherwise.
    isolated = sil[sil["subset"] == sil["factor"]]
    table = isolated if len(isolated) else sil
    for model, rows in table.groupby("model", sort=False):
        ranked = rows.sort_values("value", ascending=False)
        top, low = ranked.iloc[0], ranked.iloc[-1]
        lines.append(f"  {model}: most sensitive to {top['factor']} (silhouette {top['value']:+.3f}), "
                     f"least to {low['factor']} ({low['value']:+.3f})")
    lines += effect_summary(results_dir)  # invariant to / like a change of car, per model
    comparison_path = results_dir / SALIENCY_COMPARISON
    if comparison_path.is_file():
        comparison = pd.read_csv(comparison_path)
        pairs = comparison[comparison["metric"] == "spearman"]  # one row per unordered model pair
        for _, row in pairs.iterrows():
            lines.append(f"  saliency {row['model_a']} vs {row['model_b']}: Spearman {row['mean']:+.3f} "
                         f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] over {int(row['n'])} images")
    return "\n".join(lines)


def _parse_run(text: str) -> tuple[str, float | None]:
    from blender_addon.core.errors import CarprobeError

    loss, _, rho = text.partition(":")
    if not rho:
        return loss, None
    try:
        value = float(rho)
    except ValueError:
        raise CarprobeError(f"--runs {text!r}: the part after ':' is the ρ-regularisation probability, "
                            "a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise CarprobeError(f"--runs {text!r}: ρ-regularisation probability {value} is outside [0, 1]")
    return loss, value


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def _render(spec: Path, out: Path, workers: int, limit: int | None, progress: bool) -> None:
    """Render in child processes: bpy must never load into this (torch) process."""
    from blender_addon.core.errors import CarprobeError

    command = [sys.executable, "-m", "analysis.cli", "render", str(spec), "--out", str(out),
               "--workers", str(workers)]
    if limit is not None:
        command += ["--limit", str(limit)]
    if not progress:
        command.append("--no-progress")
    code = subprocess.run(command, cwd=Path.cwd()).returncode
    if code != 0:
        raise CarprobeError(f"rendering {spec} failed (exit code {code}); see the messages above. "
                            f"Rerun the demo to resume: finished images in {out} are kept")


def _carprobe(argv: list[str], quiet_stdout: bool = False) -> None:
    from blender_addon.core.errors import CarprobeError

    from ..cli import main

    if quiet_stdout:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    else:
        code = main(argv)
    if code != 0:
        raise CarprobeError(f"`carprobe {argv[0]}` failed (exit code {code}); see the messages above")
