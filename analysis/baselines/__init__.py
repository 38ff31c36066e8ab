"""Baselines: what a fine-tuned model must beat, and the floor beneath every measurement.

A DML model's numbers only mean something next to two references (Kobs et al. compared
ImageNet-pretrained networks fine-tuned with each loss):

- the ImageNet-only network, the same backbone with no DML training (``imagenet:<arch>``):
  what fine-tuning added;
- an untrained network (``untrained:<arch>``): what the architecture and the images give with
  no learning at all. Two differently seeded untrained networks also bound saliency agreement
  from below, as does a model against its own fully randomised copy (Adebayo et al. 2018).

``unseen_class_recall`` measures Recall@1 on the unseen (test) classes of a training set, the
zero-shot split the trainer uses, with a 95% Wilson interval over the queries and the chance
level; ``significant_factors`` names the factors a model is significantly sensitive to;
``summary_lines`` puts it together for `carprobe demo` and the report's summary section.
Models are recognised as baselines by name: ``imagenet`` or ``untrained`` in it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.report.context import NR_PREC_SIGNIFICANT
from analysis.saliency.report_section import saliency_dir

TEST_CLASS_RECALL = "test_class_recall.csv"  # written by `carprobe demo` into the results folder
TEST_CLASS_COLUMNS = ["model", "label", "metric", "value", "ci_low", "ci_high", "n", "chance", "classes"]
# NR-Prec: two-sided p = 0.01, the one constant the report states
SIGNIFICANT_Z = NR_PREC_SIGNIFICANT


def baseline_kind(name: str) -> str | None:
    """'imagenet', 'untrained' or None (a trained model), from a model's display name."""
    lowered = str(name).lower()
    if "untrained" in lowered:
        return "untrained"
    if "imagenet" in lowered:
        return "imagenet"
    return None


def unseen_class_recall(train_set: str | Path, models: dict[str, Any], label: str = "car_id", *,
                      batch_size: int = 64, workers: int | str = "auto", device=None,
                      progress: bool = True) -> pd.DataFrame:
    """Recall@1 of every model (name → EmbeddingModel) on the test classes of `train_set` (the
    second half of the sorted class names, as `carprobe train` splits them), cosine on
    L2-normalised embeddings as the trainer logs it, with a 95% Wilson interval over the queries
    and the chance level (the mean share of a query's class among the other images)."""
    from analysis.embed import embed_paths
    from analysis.metrics.retrieval import retrieval_metrics
    from analysis.saliency.masks import wilson_interval
    from analysis.train.data import load_labelled_images, split_classes

    _, test = split_classes(load_labelled_images(train_set, label))
    labels = np.asarray(test.labels)
    counts = np.bincount(labels)
    queries = counts[labels] > 1
    n = int(queries.sum())
    chance = float(np.mean((counts[labels][queries] - 1) / (len(labels) - 1)))
    rows = []
    for name, model in models.items():
        x = embed_paths(test.paths, model, batch_size=batch_size, num_workers=workers, device=device,
                        progress=progress, normalize=True, desc=f"test classes: {name}")
        recall = retrieval_metrics(x, labels, ks=(1,), nmi=False, device=device)["recall@1"]
        low, high = wilson_interval(int(round(recall * n)), n)
        rows.append({"model": name, "label": label, "metric": "recall@1", "value": float(recall), "ci_low": low,
                     "ci_high": high, "n": n, "chance": chance, "classes": len(test.class_names)})
    return pd.DataFrame(rows, columns=TEST_CLASS_COLUMNS)


def significant_factors(silhouettes: pd.DataFrame | None, nr_precision: pd.DataFrame | None) -> dict[str, dict[str, str]]:
    """{model: {factor: why}} for the factors each model is significantly sensitive to, on each
    factor's own one-factor-at-a-time subset (else the whole set): NR-Prec mean z >= 2.576, or
    a silhouette whose 95% interval lies above 0."""
    found: dict[str, dict[str, str]] = {}
    for frame, test in ((nr_precision, "nr"), (silhouettes, "sil")):
        if frame is None or frame.empty:
            continue
        rows = _primary(frame)
        for _, row in rows.iterrows():
            model, factor = str(row["model"]), str(row["factor"])
            found.setdefault(model, {})
            if test == "nr" and row["value"] >= SIGNIFICANT_Z:
                found[model][factor] = f"NR-Prec {row['value']:.2f}"
            elif test == "sil" and "ci_low" in row and np.isfinite(row["ci_low"]) and row["ci_low"] > 0:
                why = f"silhouette {row['value']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                found[model][factor] = f"{found[model][factor]}; {why}" if factor in found[model] else why
    return found


def _primary(frame: pd.DataFrame) -> pd.DataFrame:
    """Each factor's own subset when the design has one (one factor at a time), else 'all'."""
    isolated = frame[frame["subset"].astype(str) == frame["factor"].astype(str)]
    if "metric" in frame:
        isolated = isolated[isolated["metric"].isin(["silhouette", "nr_precision"])]
    return isolated if len(isolated) else frame[frame["subset"].astype(str) == "all"]


def saliency_floor(results_dir: Path) -> list[dict[str, Any]]:
    """Spearman agreement of saliency maps: every model pair, each marked 'models', 'untrained
    pair' (two differently seeded untrained networks) or 'vs randomised copy' (the sanity
    check's last, fully randomised step)."""
    rows: list[dict[str, Any]] = []
    # the saliency section's own lookup (results/saliency/ or results/), else the folder itself
    folder = saliency_dir(results_dir) or Path(results_dir)
    compare_path = folder / "saliency_compare.csv"
    if compare_path.is_file():
        compare = pd.read_csv(compare_path)
        for _, row in compare[compare["metric"] == "spearman"].iterrows():
            both = baseline_kind(row["model_a"]) == baseline_kind(row["model_b"]) == "untrained"
            rows.append({"kind": "untrained pair" if both else "models", "a": row["model_a"], "b": row["model_b"],
                         "mean": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"], "n": row["n"]})
    sanity_path = folder / "saliency_sanity.csv"
    if sanity_path.is_file():
        sanity = pd.read_csv(sanity_path)
        sanity = sanity[sanity["metric"] == "spearman"]
        for model, steps in sanity.groupby("model", sort=False):
            last = steps.loc[steps["step"].idxmax()]
            rows.append({"kind": "vs randomised copy", "a": model, "b": f"{model}, every layer re-initialised",
                         "mean": last["mean"], "ci_low": last["ci_low"], "ci_high": last["ci_high"], "n": last["n"]})
    return rows


def _interval(value: float, low: float, high: float, digits: int = 3) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summary_lines(results_dir: str | Path) -> list[str]:
    """The baseline comparison in a few lines (what `carprobe demo` prints)."""
    results_dir = Path(results_dir)
    lines: list[str] = []
    recall_path = results_dir / TEST_CLASS_RECALL
    if recall_path.is_file():
        recall = pd.read_csv(recall_path)
        if len(recall):
            first = recall.iloc[0]
            lines.append(f"  test-class Recall@1 ({int(first['classes'])} unseen {first['label']} classes of the "
                         f"training set, {int(first['n'])} queries, 95% Wilson interval; chance {first['chance']:.3f}):")
            width = max(len(str(m)) for m in recall["model"])
            for _, row in recall.iterrows():
                lines.append(f"    {str(row['model']):<{width}}  {_interval(row['value'], row['ci_low'], row['ci_high'])}")
            verdict = recall_verdict(recall)
            if verdict:
                lines.append(f"    {verdict}")
    retrieval_path = results_dir / "retrieval.csv"
    if retrieval_path.is_file():
        retrieval = pd.read_csv(retrieval_path)
        r1 = retrieval[retrieval["metric"] == "recall@1"]
        if len(r1):
            label = str(r1.iloc[0]["factor"])
            lines.append(f"  analysis-set Recall@1 ({label}): "
                         + ", ".join(f"{row['model']} {row['value']:.3f}" for _, row in r1.iterrows()))
    significant = significant_factors(_read(results_dir / "silhouettes.csv"), _read(results_dir / "nr_precision.csv"))
    if significant:
        lines.append("  significantly sensitive to (NR-Prec z >= 2.576, or a silhouette interval above 0):")
        imagenet = next((m for m in significant if baseline_kind(m) == "imagenet"), None)
        for model, factors in significant.items():
            text = ", ".join(factors) or "no factor"
            if imagenet is not None and model != imagenet and baseline_kind(model) is None:
                gained = [f for f in factors if f not in significant[imagenet]]
                lost = [f for f in significant[imagenet] if f not in factors]
                text += (f" (vs {imagenet}: " + ("; ".join(filter(None, [
                    "also " + ", ".join(gained) if gained else "", "no longer " + ", ".join(lost) if lost else ""]))
                    or "the same factors") + ")")
            lines.append(f"    {model}: {text}")
    floor = saliency_floor(results_dir)
    if floor:
        lines.append("  saliency agreement (Spearman, mean over images [95% interval]):")
        for kind in ("models", "vs randomised copy", "untrained pair"):
            for row in (r for r in floor if r["kind"] == kind):
                label = {"models": "", "vs randomised copy": "floor: ", "untrained pair": "floor: "}[kind]
                lines.append(f"    {label}{row['a']} vs {row['b']}: {_interval(row['mean'], row['ci_low'], row['ci_high'])}")
    return lines


def recall_verdict(recall: pd.DataFrame) -> str:
    """Whether every trained model's interval lies above the ImageNet-only one, and that one
    above the untrained one (the demo's claim), in words."""
    kinds = {row["model"]: baseline_kind(row["model"]) for _, row in recall.iterrows()}
    imagenet = recall[[kinds[m] == "imagenet" for m in recall["model"]]]
    untrained = recall[[kinds[m] == "untrained" for m in recall["model"]]]
    trained = recall[[kinds[m] is None for m in recall["model"]]]
    if imagenet.empty or untrained.empty or trained.empty:
        return ""
    base = imagenet.iloc[0]
    above = [m for m, low in zip(trained["model"], trained["ci_low"]) if low > base["ci_high"]]
    floor_ok = base["ci_low"] > untrained["ci_high"].max()
    return (f"{len(above)} of {len(trained)} fine-tuned models above the ImageNet-only interval"
            + (f" ({', '.join(above)})" if above and len(above) < len(trained) else "")
            + f"; ImageNet-only {'above' if floor_ok else 'NOT above'} the untrained interval")


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None
