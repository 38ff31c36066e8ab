"""analysis.baselines: test-class Recall@1 with intervals and chance, significant factors next to
the ImageNet-only network, the saliency floor, the summary lines and the report section."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.baselines import (recall_verdict, saliency_floor, significant_factors, summary_lines,
                                unseen_class_recall)
from analysis.baselines.report_section import section
from analysis.report.context import ReportContext

sys.path.insert(0, str(Path(__file__).parent))
from train_synthetic import write_image_folder  # noqa: E402

IMAGENET, UNTRAINED = "imagenet:efficientnet_lite0:size=128", "untrained:efficientnet_lite0:size=128"


def _scores(metric: str, rows) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "factor": f, "subset": s, "metric": metric, "value": v, "ci_low": lo,
                          "ci_high": hi} for m, f, s, v, lo, hi in rows])


@pytest.fixture()
def results(tmp_path) -> Path:
    _scores("silhouette", [
        ("ms", "paint.color", "paint.color", 0.20, 0.01, 0.30),          # interval above 0: significant
        ("ms", "camera.azimuth", "camera.azimuth", 0.05, -0.02, 0.10),   # not
        ("ms", "camera.azimuth", "all", 0.90, 0.80, 0.95),               # not its own subset: ignored
        (IMAGENET, "paint.color", "paint.color", 0.10, -0.01, 0.20),
        (IMAGENET, "camera.azimuth", "camera.azimuth", 0.30, 0.20, 0.40),
    ]).to_csv(tmp_path / "silhouettes.csv", index=False)
    _scores("nr_precision", [
        ("ms", "background.color", "background.color", 2.60, 2.0, 3.0),   # >= 2.576: significant
        ("ms", "lighting.sun_azimuth", "lighting.sun_azimuth", 2.50, 2.0, 3.0),
        (IMAGENET, "background.color", "background.color", 2.576, 2.0, 3.0),
    ]).to_csv(tmp_path / "nr_precision.csv", index=False)
    pd.DataFrame([
        {"model_a": "ms", "model_b": IMAGENET, "metric": "spearman", "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 8},
        {"model_a": UNTRAINED, "model_b": "untrained:efficientnet_lite0:seed=1:size=128", "metric": "spearman",
         "mean": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 8},
        {"model_a": "ms", "model_b": IMAGENET, "metric": "ssim", "mean": 0.9, "ci_low": 0.8, "ci_high": 1.0, "n": 8},
    ]).to_csv(tmp_path / "saliency_compare.csv", index=False)
    pd.DataFrame([{"model": "ms", "step": s, "layer": "x", "metric": "spearman", "mean": m, "ci_low": m - 0.1,
                   "ci_high": m + 0.1, "n": 4} for s, m in ((0, 1.0), (1, 0.6), (2, 0.25))]
                 ).to_csv(tmp_path / "saliency_sanity.csv", index=False)
    pd.DataFrame([{"model": m, "label": "car_id", "metric": "recall@1", "value": v, "ci_low": lo, "ci_high": hi,
                   "n": 210, "chance": 0.045, "classes": 21}
                  for m, v, lo, hi in (("ms", 0.5, 0.43, 0.57), (IMAGENET, 0.2, 0.15, 0.26),
                                       (UNTRAINED, 0.06, 0.03, 0.1))]).to_csv(tmp_path / "test_class_recall.csv",
                                                                             index=False)
    return tmp_path


def test_significant_factors_use_each_factors_own_subset_and_both_tests(results):
    found = significant_factors(pd.read_csv(results / "silhouettes.csv"), pd.read_csv(results / "nr_precision.csv"))
    assert set(found["ms"]) == {"paint.color", "background.color"}
    assert set(found[IMAGENET]) == {"camera.azimuth", "background.color"}  # z exactly 2.576 counts


def test_saliency_floor_rows(results):
    rows = {(r["kind"], r["a"]): r["mean"] for r in saliency_floor(results)}
    assert rows == {("models", "ms"): 0.5, ("untrained pair", UNTRAINED): 0.3, ("vs randomised copy", "ms"): 0.25}


def test_recall_verdict_needs_non_overlapping_intervals():
    frame = pd.DataFrame({"model": ["a", "b", IMAGENET, UNTRAINED], "value": [0.5, 0.3, 0.2, 0.1],
                          "ci_low": [0.43, 0.24, 0.15, 0.05], "ci_high": [0.57, 0.36, 0.26, 0.15]})
    assert recall_verdict(frame) == ("1 of 2 fine-tuned models above the ImageNet-only interval (a); "
                                     "ImageNet-only NOT above the untrained interval")


def test_summary_lines_and_report_section(results):
    text = "\n".join(summary_lines(results))
    assert "test-class Recall@1 (21 unseen car_id classes of the training set, 210 queries" in text
    import re

    assert "chance 0.045" in text and re.search(r"\n    ms +0\.500 \[0\.430, 0\.570\]\n", text)
    assert "2 of" not in text and "1 of 1 fine-tuned models above the ImageNet-only interval" in text
    assert f"ms: background.color, paint.color (vs {IMAGENET}: also paint.color; no longer camera.azimuth)" in text
    assert "floor: ms vs ms, every layer re-initialised: 0.250 [0.150, 0.350]" in text
    html = section(results, ReportContext(results_dir=results, title="t", manifest={}))
    assert html.startswith("<section") and html.count("<h2") == 1 and "≠ ImageNet" in html
    assert section(results / "nothing", ReportContext(results_dir=results / "nothing", title="t", manifest={})) is None


def test_test_class_recall_matches_retrieval_and_wilson(tmp_path):
    from analysis.embed import embed_paths
    from analysis.metrics.retrieval import retrieval_metrics
    from analysis.models import build_model
    from analysis.train.data import load_labelled_images, split_classes

    data = write_image_folder(tmp_path / "data", per_class=5, size=32)
    torch.manual_seed(0)
    model = build_model("resnet18", dim=8, random_init=True, preprocess={"resize": 32, "crop": 32}).eval()
    table = unseen_class_recall(data, {"r18": model}, label="car_id", workers=0, device="cpu", progress=False)
    row = table.iloc[0]
    _, test = split_classes(load_labelled_images(data))
    x = embed_paths(test.paths, model, num_workers=0, device="cpu", progress=False, normalize=True)
    assert row["value"] == retrieval_metrics(x, test.labels, ks=(1,), nmi=False)["recall@1"]
    assert (row["n"], row["classes"]) == (20, 4) and row["chance"] == pytest.approx(4 / 19)
    assert 0 <= row["ci_low"] < row["ci_high"] <= 1 and row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["ci_high"] - row["ci_low"] > 0.2  # 20 queries: a wide interval
    assert np.isfinite(table[["value", "ci_low", "ci_high"]].to_numpy()).all()


def test_saliency_floor_reads_a_saliency_subfolder(results, tmp_path):
    import shutil

    from analysis.saliency.report_section import MANIFEST

    folder = tmp_path / "saliency"
    folder.mkdir()
    for name in ("saliency_compare.csv", "saliency_sanity.csv"):
        shutil.move(str(results / name), folder / name)
    (folder / MANIFEST).write_text("{}")
    rows = {(r["kind"], r["a"]): r["mean"] for r in saliency_floor(tmp_path)}
    assert rows == {("models", "ms"): 0.5, ("untrained pair", UNTRAINED): 0.3, ("vs randomised copy", "ms"): 0.25}
