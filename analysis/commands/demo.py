"""`carprobe demo`: the main job, from nothing to a report comparing what different losses learn.

    carprobe demo --out out/demo

1. render `scenes/quick.toml` (one factor at a time) and `scenes/demo_train.toml` (many car
   identities) in Blender worker processes (bpy never shares a process with torch);
2. fine-tune the ImageNet EfficientNet-Lite0 with clearly different losses on the training set;
3. measure every model and the two baselines (the ImageNet-only network, `imagenet:<arch>`, and
   an untrained one, `untrained:<arch>`) on the training set's unseen classes;
4. embed the quick set with every model; property silhouettes, NR-Prec, embedding-space and
   retrieval metrics; saliency maps, their correlations, mask shares and their untrained floor;
5. write report.html and print its path and a short summary.

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

from .report import default_model_names

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_SPEC = REPO_ROOT / "scenes" / "quick.toml"
TRAIN_SPEC = REPO_ROOT / "scenes" / "demo_train.toml"
# One classification-based loss, one ranking-based loss, and a ranking loss with
# ρ-regularisation: the contrasts of Kobs et al. (classification vs ranking) and Roth et al. (ρ;
# triplet with distance-weighted sampling, one of the paper's ρ recipes). Measured on the
# default sets, margin+ρ 0.3 stayed below the ImageNet-only network in the demo's few epochs.
DEFAULT_RUNS = ("normalizedsoftmax", "multisimilarity", "triplet:0.3")
SUMMARY_FILE = "summary.txt"  # the printed summary, kept next to the report


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
    parser.add_argument("--epochs", type=int, default=7, help="training epochs per model")
    parser.add_argument("--eval-train-images", type=int, default=128,
                        help="training images embedded after each epoch for density and spectral decay "
                             "(every test image is always embedded for Recall@1)")
    parser.add_argument("--dim", type=int, default=0,
                        help="embedding size of the trained models (default 0: no head, the pooled trunk "
                             "features, so training starts from the ImageNet-only network's own geometry)")
    parser.add_argument("--arch", default="efficientnet_lite0",
                        help="backbone of the trained models and the baselines (default efficientnet_lite0: "
                             "its ImageNet weights come with the analysis extra)")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="ImageNet weights file for a torchvision --arch (EfficientNet-Lite needs none)")
    parser.add_argument("--image-size", type=int, default=128, help="training input size (px)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--samples-per-class", type=int, default=4, help="images of each class per batch")
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="learning rate of the trunk (10 x the fair setup's 1e-5: the demo trains briefly)")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the embedding head")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false",
                        help="leave out the imagenet:<arch> and untrained:<arch> baselines")
    parser.add_argument("--saliency-images", type=int, default=8, help="images explained per model")
    parser.add_argument("--sanity-images", type=int, default=4,
                        help="images of the randomisation check of the first model (its fully randomised copy "
                             "is the saliency floor)")
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
    steps = 6
    _step(1, steps, f"render {args.quick_spec.name} -> {sets / 'quick'}")
    _render(args.quick_spec, sets / "quick", args.render_workers, args.quick_limit, args.progress)
    _step(2, steps, f"render {args.train_spec.name} -> {sets / 'train'}")
    _render(args.train_spec, sets / "train", args.render_workers, args.train_limit, args.progress)

    _step(3, steps, f"fine-tune {args.arch} with {len(runs)} loss(es) -> {run_root}")
    models, names = [], []
    for loss, rho in runs:
        name = loss if rho is None else f"{loss}+rho{rho:g}"
        run_dir = run_root / name
        command = ["train", "--data", str(sets / "train"), "--label", "car_id", "--loss", loss,
                   "--arch", args.arch, "--dim", str(args.dim), "--image-size", str(args.image_size),
                   "--epochs", str(args.epochs), "--eval-train-images", str(args.eval_train_images),
                   "--batch-size", str(args.batch_size), "--samples-per-class", str(args.samples_per_class),
                   "--lr", str(args.lr), "--head-lr", str(args.head_lr), "--device", args.device,
                   "--out", str(run_dir)]
        if args.weights is not None:
            command += ["--weights", str(args.weights)]
        if rho is not None:
            command += ["--rho-reg", str(rho)]
        if (run_dir / "last.pt").is_file():
            command.append("--resume")  # finished runs return at once; interrupted ones continue
        print(f"  carprobe {' '.join(command)}", flush=True)
        _carprobe(command)
        models.append(str(run_dir / "best.pt"))
        names.append(name)
    models += [str(ref) for ref in args.models]
    names += default_model_names(models[len(names):])  # the names `carprobe report` would give them
    # the baselines: the same backbone with ImageNet weights only, and with random weights, fed
    # the same input size as the fine-tuned models (only the weights differ)
    size = f":size={args.image_size}"
    baselines = [f"imagenet:{args.arch}{size}", f"untrained:{args.arch}{size}"] if args.baselines else []
    weights = ["--weights", str(args.weights)] if args.weights is not None and args.baselines else []

    _step(4, steps, f"Recall@1 on the training set's unseen classes, against the baselines -> {results}")
    _test_class_recall(sets / "train", models + baselines, names + baselines, args, results)

    _step(5, steps, f"embed, silhouettes, NR-Prec, metrics -> {results}")
    shared = ["--device", args.device, "--out", str(results), *weights]
    progress = [] if args.progress else ["--no-progress"]
    _carprobe(["report", str(sets / "quick"), "--models", *models, *baselines, "--names", *names, *baselines,
               *shared, *progress])
    _step(6, steps, f"saliency ({args.saliency_method}), model correlations, mask shares, floor -> {results}")
    # a second untrained network, seeded differently: two nets that learned nothing bound agreement below
    floor = [f"untrained:{args.arch}:seed=1{size}"] if args.baselines else []
    _carprobe(["saliency", str(sets / "quick"), "--models", *models, *baselines, *floor,
               "--names", *names, *baselines, *floor, *shared, "--method", args.saliency_method,
               "--images", str(args.saliency_images), "--sanity-images", str(args.sanity_images), *progress])
    _carprobe(["report", "--results", str(results), str(sets / "quick")], quiet_stdout=True)

    report = results / "report.html"
    text = summary(results)
    from blender_addon.core.render_set import atomic_write_text

    atomic_write_text(results / SUMMARY_FILE, text + "\n")
    print(f"\nreport: {report.resolve()}")
    print(text)
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


def _test_class_recall(train_set: Path, refs: list[str], names: list[str], args, results: Path) -> None:
    """test_class_recall.csv: every model's Recall@1 on the unseen classes, printed as it goes."""
    from blender_addon.core.render_set import atomic_write_text

    from ..baselines import TEST_CLASS_RECALL, unseen_class_recall
    from ..models import is_model_spec, load_model

    models = {}
    for name, ref in zip(names, refs):
        takes = args.weights is not None and is_model_spec(ref) and not ref.startswith("untrained:")
        models[name] = load_model(ref, weights=args.weights if takes else None)
    table = unseen_class_recall(train_set, models, batch_size=64, device=None if args.device == "auto" else args.device,
                              progress=args.progress)
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / TEST_CLASS_RECALL, table.to_csv(index=False))
    for _, row in table.iterrows():
        print(f"  {row['model']}: Recall@1 {row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
              f"(chance {row['chance']:.3f})", flush=True)


def summary(results_dir: Path) -> str:
    """A few lines: each model's most and least encoded factor, the models against the baselines
    (Recall@1, significant factors) and how alike their saliency is, next to its floor."""
    import pandas as pd

    from ..effects import summary_lines as effect_summary
    from ..baselines import summary_lines
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
    lines += summary_lines(results_dir)  # against the baselines; saliency agreement and its floor
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
