"""`carprobe saliency` end to end on a tiny render set with part masks written by the test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from saliency_helpers import make_render_set, one_torch_thread  # noqa: F401 (autouse fixture)

from analysis.cli import ANALYSIS_COMMANDS
from analysis.models import build_model, save_checkpoint
from blender_addon import cli as render_cli

SMALL = {"resize": 64, "crop": 64}  # ResNet-18 at 64 px: fast on CPU, 2 x 2 layer4 for Grad-CAM


def carprobe(*argv: str) -> int:
    # only the command under test: the others are built elsewhere and need not exist here
    return render_cli.main(list(argv), {"saliency": ANALYSIS_COMMANDS["saliency"]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    make_render_set(root / "set")
    make_render_set(root / "nomasks", masks=False)
    paths = []
    for seed in (0, 1):
        import torch

        torch.manual_seed(seed)
        model = build_model("resnet18", dim=8, random_init=True, preprocess=SMALL, name=f"r18-{seed}")
        paths.append(str(save_checkpoint(model, root / f"model{seed}.pt")))
    return root, paths


def test_cli_writes_maps_tables_and_figures_and_reuses_maps(tiny, capsys):
    root, (model0, model1) = tiny
    out = root / "out"
    argv = ["saliency", str(root / "set"), "--models", model0, model0, model1, "--names", "A", "A2", "B",
            "--method", "saliency", "--target", "reference", "--images", "4", "--sanity-images", "2",
            "--sanity-steps", "3", "--device", "cpu", "--out", str(out)]
    assert carprobe(*argv) == 0
    err = capsys.readouterr().err  # progress on a log file: plain lines, no carriage returns
    assert "\r" not in err and "saliency saliency: 12/12 (100%)" in err and "sanity check: 1/1 (100%)" in err
    manifest = json.loads((out / "saliency.json").read_text())
    assert manifest["images"] == [0, 2, 3, 5] and [m["name"] for m in manifest["models"]] == ["A", "A2", "B"]
    for name in ("saliency_grid.png", "saliency_matrix.png", "saliency_masks.png", "saliency_sanity.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    comparison = pd.read_csv(out / "saliency_compare.csv")
    assert list(comparison.columns) == ["model_a", "model_b", "metric", "mean", "ci_low", "ci_high", "n"]
    spearman = comparison[comparison.metric == "spearman"].set_index(["model_a", "model_b"])["mean"]
    assert spearman[("A", "A2")] == pytest.approx(1.0, abs=1e-6)  # the same weights twice
    assert spearman[("A", "B")] < 0.99

    shares = pd.read_csv(out / "saliency_masks.csv")
    assert list(shares.columns)[:3] == ["model", "part", "share"]
    assert shares.groupby("model")["share"].sum().to_numpy() == pytest.approx([1, 1, 1])
    assert set(shares.part) == {"background", "body", "glass", "wheels", "lights", "trim", "ground"}
    sanity = pd.read_csv(out / "saliency_sanity.csv")
    assert list(sanity["step"].unique()) == [0, 1, 2, 3] and set(sanity.model) == {"A"}
    independent = pd.read_csv(out / "saliency_sanity_independent.csv")  # Adebayo et al.'s second check
    assert list(independent["layer"]) == list(sanity["layer"]) and (out / "saliency_sanity_independent.png").is_file()

    maps = sorted((out / "maps").glob("*.npz"))
    assert len(maps) == 3  # one file per model name
    stamps = [p.stat().st_mtime_ns for p in maps]
    capsys.readouterr()
    assert carprobe(*argv, "--sanity-images", "0", "--quiet") == 0
    assert [p.stat().st_mtime_ns for p in maps] == stamps  # reused, not recomputed

    from analysis.report.context import ReportContext
    from analysis.saliency.report_section import section

    html = section(root, ReportContext(results_dir=root, title="t", manifest={})) if (root / "saliency.json").exists() \
        else section(out, ReportContext(results_dir=out, title="t", manifest={}))
    assert html.startswith("<section") and "Spearman" in html and "data:image/png;base64" in html
    # the method box states the Jensen-Shannon unit and both sanity checks
    assert "in nats (natural log" in html and "Independent randomisation" in html
    assert section(root / "set", ReportContext(results_dir=root, title="t", manifest={})) is None


@pytest.mark.parametrize("method,target,baseline", [("gradcam", "centroid", None), ("kobs2021", "baseline", None),
                                                   ("ig", "norm", None), ("gradshap", "baseline", "blur")])
def test_cli_methods_and_targets_on_a_real_model(tiny, method, target, baseline):
    root, (model0, _) = tiny
    out = root / f"out-{method}"
    extra = ["--baseline", baseline] if baseline else []
    assert carprobe("saliency", str(root / "set"), "--models", model0, "--method", method, "--target", target,
                    "--images", "0", "4", "--steps", "4", "--samples", "3", "--sanity-images", "0",
                    "--device", "cpu", "--out", str(out), "--quiet", *extra) == 0
    manifest = json.loads((out / "saliency.json").read_text())
    if baseline:  # the method's reference input and the target's reference image
        assert manifest["options"]["baseline"] == baseline and manifest["target"] == f"baseline:{baseline}"
    (path,) = (out / "maps").glob("*.npz")
    with np.load(path) as data:
        assert data["maps"].shape == (2, 64, 64) and list(data["indices"]) == [0, 4]
    assert not (out / "saliency_compare.csv").exists()  # one model: nothing to compare


def test_cli_user_errors(tiny, capsys):
    root, (model0, _) = tiny
    base = ["saliency", str(root / "nomasks"), "--models", model0, "--device", "cpu", "--out", str(root / "err"),
            "--sanity-images", "0", "--quiet", "--images", "1"]
    assert carprobe(*base, "--masks", "on", "--method", "saliency") == 2
    assert "render.masks = true" in capsys.readouterr().err
    assert carprobe(*base, "--method", "lime") == 2
    assert "allowed: saliency, ig, gradshap, occlusion, gradcam, smoothgrad, kobs2021" in capsys.readouterr().err
    assert carprobe(*base[:-1], "7", "3", "--method", "saliency") == 2
    assert "outside the set" in capsys.readouterr().err
    assert carprobe(*base, "--method", "saliency", "--target", "self") == 2
    assert "allowed: reference, centroid, baseline, norm" in capsys.readouterr().err
    assert carprobe(*base, "--method", "saliency", "--models", model0, model0, "--names", "only-one") == 2
    assert "1 names for 2 models" in capsys.readouterr().err


def test_baseline_flag_is_checked(tmp_path, capsys):
    assert carprobe("saliency", str(tmp_path), "--models", "m.pt", "--baseline", "white") == 2
    assert "invalid choice: 'white'" in capsys.readouterr().err
    assert carprobe("saliency", str(tmp_path), "--models", "m.pt", "--method", "saliency", "--target", "norm",
                    "--baseline", "blur") == 2
    assert "neither --method saliency nor --target norm uses a baseline" in capsys.readouterr().err
