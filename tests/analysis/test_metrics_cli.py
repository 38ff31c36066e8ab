"""`carprobe silhouettes` and `carprobe metrics` on a small render set written by the test."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from synthetic_set import QUICK_TOML, render_synthetic_set

from analysis.cli import ANALYSIS_COMMANDS
from analysis.models import build_model, save_checkpoint
from blender_addon import cli as render_cli


def main(argv):
    names = ("silhouettes", "metrics")  # the real dispatch, with only these commands
    return render_cli.main(argv, {n: ANALYSIS_COMMANDS[n] for n in names})


@pytest.fixture(scope="module")
def render_set_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics-cli")
    render_set = render_synthetic_set(QUICK_TOML, root / "set")  # 2 bodies x (3 colours + 3 azimuths + 2 bgs)
    torch.manual_seed(0)
    model = build_model("resnet18", dim=8, random_init=True, preprocess={"resize": 32, "crop": 32}).eval()
    return render_set, save_checkpoint(model, root / "tiny.pt")


def test_silhouettes_command_writes_tidy_tables(render_set_and_model, tmp_path, capsys):
    render_set, model = render_set_and_model
    out = tmp_path / "results"
    assert main(["silhouettes", str(render_set), "--models", str(model), str(model), "--out", str(out),
                 "--measure", "both", "--quiet"]) == 0
    scores = pd.read_csv(out / "silhouettes.csv")
    assert list(scores.columns[:5]) == ["model", "factor", "subset", "metric", "value"]
    assert scores["model"].nunique() == 2  # the same model twice: names kept apart
    assert set(scores["factor"]) == {"car.body", "paint.color", "camera.azimuth", "background.color"}
    assert {"paint.color", "all"} <= set(scores.loc[scores["factor"] == "paint.color", "subset"])
    assert scores["value"].between(-1, 1).all()
    # same model, same embeddings: identical numbers in both columns
    first, second = (g.set_index(["factor", "subset"])["value"] for _, g in scores.groupby("model"))
    pd.testing.assert_series_equal(first, second, check_names=False)
    per_value = pd.read_csv(out / "silhouettes_per_value.csv")
    assert set(per_value.query("factor == 'paint.color' and subset == 'paint.color'")["level"]) == {"red", "blue", "yellow"}
    nr = pd.read_csv(out / "nr_precision.csv")
    assert set(nr["metric"]) == {"nr_precision"} and nr["value"].notna().all()
    printed = capsys.readouterr().out
    assert "silhouette (cosine)" in printed and "paint.color" in printed and "NR-Prec" in printed


def test_warm_silhouettes_never_build_a_cached_checkpoint_model(render_set_and_model, tmp_path, monkeypatch):
    import analysis.models

    render_set, model = render_set_and_model
    argv = ["silhouettes", str(render_set), "--models", str(model), "--measure", "silhouette", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "cold")]) == 0  # fills the embedding cache

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached model was built")

    monkeypatch.setattr(analysis.models, "build_model", forbidden)
    assert main(argv + ["--out", str(tmp_path / "warm")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cold" / "silhouettes.csv"),
                                  pd.read_csv(tmp_path / "warm" / "silhouettes.csv"))


def test_metrics_command_and_bad_label(render_set_and_model, tmp_path, capsys):
    render_set, model = render_set_and_model
    out = tmp_path / "results"
    assert main(["metrics", str(render_set), "--models", str(model), "--label", "car_id", "--ks", "1", "2",
                 "--out", str(out), "--quiet"]) == 0
    space = pd.read_csv(out / "embedding_metrics.csv")
    assert set(space["metric"]) == {"pi_intra", "pi_inter", "pi_ratio", "rho", "rho_drop_largest"}
    assert (space["factor"] == "car_id").all() and (space["subset"] == "all").all()
    retrieval = pd.read_csv(out / "retrieval.csv")
    assert set(retrieval["metric"]) == {"recall@1", "recall@2", "r_precision", "map_at_r", "nmi"}
    assert retrieval["value"].between(0, 1).all()
    assert "retrieval" in capsys.readouterr().out
    assert main(["metrics", str(render_set), "--models", str(model), "--label", "no_such_column"]) == 2
    assert "--label 'no_such_column': not a column" in capsys.readouterr().err
