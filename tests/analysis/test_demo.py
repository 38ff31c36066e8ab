"""The main job end to end at toy sizes: real Blender renders (in child processes), real
training, every analysis, the report. Checks every artefact exists and holds sane values."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.commands import demo

# Looked up, never imported: bpy must not load into this torch process (the demo renders in children).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                reason="the demo renders with the bpy module (in a child process)")


def _shrink_spec(source: Path, target: Path, size: int, count: int | None = None) -> Path:
    """The demo's own spec at toy size: same factors and design, tiny images, 1 sample."""
    text = source.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^width = \d+", f"width = {size}", text)
    text = re.sub(r"(?m)^height = \d+", f"height = {size}", text)
    text = re.sub(r"(?m)^samples = \d+", "samples = 1", text)
    if count is not None:
        text = re.sub(r"(?m)^count = \d+", f"count = {count}", text)
    target.write_text(text, encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    quick = _shrink_spec(demo.QUICK_SPEC, root / "quick.toml", 32)
    train = _shrink_spec(demo.TRAIN_SPEC, root / "train.toml", 32, count=84)
    out = root / "out"
    code = main(["demo", "--out", str(out), "--quick-spec", str(quick), "--train-spec", str(train),
                 "--runs", "normalizedsoftmax", "multisimilarity:0.3", "--epochs", "1", "--image-size", "32",
                 "--batch-size", "8", "--samples-per-class", "2", "--saliency-images", "3", "--sanity-images", "2",
                 "--render-workers", "1", "--device", "cpu", "--quiet"])
    assert code == 0
    return out


def test_demo_writes_every_artefact(demo_out: Path):
    quick = demo_out / "sets" / "quick"
    assert (quick / "dataset.json").is_file() and (quick / "metadata.csv").is_file()
    meta = pd.read_csv(quick / "metadata.csv")
    assert len(meta) == json.loads((quick / "dataset.json").read_text())["counts"]["images"]
    assert all((quick / name).is_file() for name in meta["file_name"])
    for run in ("normalizedsoftmax", "multisimilarity+rho0.3"):
        assert (demo_out / "runs" / run / "best.pt").is_file()
        assert (demo_out / "runs" / run / "metrics.csv").is_file()
    report = demo_out / "report" / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "Property silhouettes" in html and "aliency" in html
    assert not re.search(r"""(src|href)\s*=\s*["']https?://""", html)


def test_demo_values_are_sane(demo_out: Path):
    results = demo_out / "report"
    sil = pd.read_csv(results / "silhouettes.csv")
    sil = sil[sil["metric"] == "silhouette"]
    assert len(sil) and sil["value"].between(-1, 1).all()
    assert set(sil["model"]) == {"normalizedsoftmax", "multisimilarity+rho0.3", *BASELINES}
    compare = pd.read_csv(results / "saliency_compare.csv")
    correlations = compare[compare["metric"].isin(["spearman", "pearson"])]
    assert len(correlations)
    assert correlations[["mean", "ci_low", "ci_high"]].apply(lambda c: c.between(-1, 1)).all().all()
    shares = pd.read_csv(results / "saliency_masks.csv")
    totals = shares.groupby("model")["share"].sum()
    np.testing.assert_allclose(totals.to_numpy(), 1.0, atol=1e-4)
    retrieval = pd.read_csv(results / "retrieval.csv")
    assert retrieval["value"].between(0, 1).all()


BASELINES = ("imagenet:efficientnet_lite0:size=32", "untrained:efficientnet_lite0:size=32")


def test_demo_measures_models_against_the_baselines(demo_out: Path):
    results = demo_out / "report"
    recall = pd.read_csv(results / "test_class_recall.csv")
    assert list(recall["model"]) == ["normalizedsoftmax", "multisimilarity+rho0.3", *BASELINES]
    assert (recall["ci_low"] <= recall["value"]).all() and (recall["value"] <= recall["ci_high"]).all()
    assert recall["chance"].between(0, 1, inclusive="neither").all() and (recall["n"] > 0).all()
    retrieval = pd.read_csv(results / "retrieval.csv")
    assert set(BASELINES) <= set(retrieval[retrieval["factor"] == "car_id"]["model"])
    compare = pd.read_csv(results / "saliency_compare.csv")
    floor = "untrained:efficientnet_lite0:seed=1:size=32"
    assert ((compare["model_a"] == BASELINES[1]) & (compare["model_b"] == floor)).any()
    html = (results / "report.html").read_text(encoding="utf-8")
    assert "Against the baselines" in html and "test classes" in html
    # the fine-tuned models start from ImageNet EfficientNet-Lite0 and record their own distance
    from analysis.models import load_model

    model = load_model(demo_out / "runs" / "multisimilarity+rho0.3" / "best.pt")
    assert model.arch == "efficientnet_lite0" and model.distance == "cosine" and model.frozen_bn


def test_demo_summary_names_each_model(demo_out: Path):
    text = demo.summary(demo_out / "report")
    assert text == (demo_out / "report" / "summary.txt").read_text(encoding="utf-8").rstrip("\n")
    assert "normalizedsoftmax: most sensitive to" in text
    assert "normalizedsoftmax: invariant to" in text  # factor effects against a change of car
    assert "normalizedsoftmax vs multisimilarity+rho0.3:" in text
    assert "test-class Recall@1" in text and "chance" in text
    assert f"floor: {BASELINES[1]} vs untrained:efficientnet_lite0:seed=1:size=32" in text
    assert "floor: normalizedsoftmax vs normalizedsoftmax, every layer re-initialised" in text


def test_demo_rejects_bad_runs(tmp_path: Path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--runs", "margin:1.5", "triplet"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err


def test_demo_rejects_zero_render_workers(tmp_path: Path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--render-workers", "0"]) == 2
    assert "--render-workers 0" in capsys.readouterr().err


def test_the_training_set_holds_whole_shapes_with_unseen_test_shapes():
    """The demo's identities are whole car shapes (shape seeds of one body look alike and no network
    told them apart): every class is a different body or shipped model, each with enough images,
    and the sorted split leaves at least nine shapes that training never sees, none of them a
    seed sibling of a training shape."""
    from blender_addon.core.sampling import sample_count, sample_row
    from blender_addon.core.spec import load_spec

    from analysis.data import label_classes
    from analysis.train.data import LabelledImages, split_classes

    spec = load_spec(demo.TRAIN_SPEC)
    rows = [sample_row(spec, i) for i in range(sample_count(spec))]
    bodies = {r["car_id"]: r["car.body"] for r in rows}
    assert len(bodies) == len(set(bodies.values())) >= 19  # one identity per body or model
    counts = pd.Series([r["car_id"] for r in rows]).value_counts()
    assert counts.min() >= 25, counts.to_dict()
    names, ids = label_classes([r["car_id"] for r in rows], "demo_train")  # the trainer's own class rule
    train, test = split_classes(LabelledImages([""] * len(ids), ids, names, "render set"))
    assert len(test.class_names) >= 9 and not set(train.class_names) & set(test.class_names)
    # the quick set's identities are seeds the training set never renders
    quick = load_spec(demo.QUICK_SPEC)
    assert not {sample_row(quick, i)["car_id"] for i in range(sample_count(quick))} & set(bodies)
