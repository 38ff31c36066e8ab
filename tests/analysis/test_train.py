"""End-to-end training on the CPU: a resnet18 at 32 px on a synthetic set, in seconds."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.embed import embed_paths
from analysis.metrics.retrieval import retrieval_metrics
from analysis.models import EmbeddingModel, build_model, load_model
from analysis.train.config import TrainConfig
from analysis.train.data import load_labelled_images, split_classes
from analysis.train.loop import StepInfo, model_preprocess, read_metrics, train
from blender_addon.core.errors import CarprobeError

sys.path.insert(0, str(Path(__file__).parent))
from train_synthetic import SHAPES, write_image_folder, write_render_set  # noqa: E402

METRIC_COLUMNS = ("recall@1", "map_at_r", "nmi", "pi_ratio", "spectral_decay")


def tiny_config(data: Path, **changes) -> TrainConfig:
    settings = dict(data=str(data), loss="multisimilarity", arch="resnet18", dim=32, image_size=32, epochs=4,
                    batch_size=16, samples_per_class=4, lr=1e-3, workers=0, eval_batch_size=128, device="cpu")
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("train") / "data", per_class=16, size=32)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs") / "ms"
    return train(tiny_config(data), out, progress=False, log=lambda text: None)


def _recall_at_1(model: EmbeddingModel, images) -> float:
    x = embed_paths(images.paths, model, batch_size=128, num_workers=0, device="cpu", progress=False, normalize=True)
    return retrieval_metrics(x, images.labels, ks=(1,), nmi=False)["recall@1"]


def test_training_logs_every_epoch_and_improves_recall(run, data):
    rows = read_metrics(run.run_dir)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    for row in rows:
        for column in METRIC_COLUMNS:
            assert np.isfinite(row[column]), (row["epoch"], column)
    assert rows[-1]["loss"] < rows[1]["loss"]
    assert all(r["images"] == 64 for r in rows[1:])  # 4 classes x 16 images, 4 batches of 16
    train_images, _ = split_classes(load_labelled_images(data))
    torch.manual_seed(0)
    untrained = build_model("resnet18", dim=32, random_init=True, preprocess=model_preprocess("resnet18", 32))
    best = load_model(run.run_dir / "best.pt")
    before, after = _recall_at_1(untrained, train_images), _recall_at_1(best, train_images)
    assert after >= before + 0.1, (before, after)  # on the training classes
    # and zero-shot, on the test classes (logged each epoch; epoch 0 = untrained)
    assert max(r["recall@1"] for r in rows[1:]) >= rows[0]["recall@1"] + 0.1
    assert run.best_epoch is not None and run.best_recall_at_1 == max(r["recall@1"] for r in rows[1:])
    assert run.best_recall_at_1 == pytest.approx(
        _recall_at_1(best, split_classes(load_labelled_images(data))[1]), abs=1e-9)


def test_checkpoints_load_with_load_model_and_embed(run):
    for name in ("best.pt", "last.pt"):
        model = load_model(run.run_dir / name)
        assert isinstance(model, EmbeddingModel) and not model.training
        assert (model.arch, model.embedding_dim, model.normalize, model.preprocess.crop) == ("resnet18", 32, True, 32)
        assert model.extra["loss"] == "multisimilarity" and model.extra["train_classes"] == list(SHAPES[:4])
        y = model.embed(torch.rand(2, 3, 32, 32))
        assert y.shape == (2, 32) and torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
    assert load_model(run.run_dir / "last.pt").extra["epoch"] == 4
    config = TrainConfig.read(run.run_dir)
    assert config.loss == "multisimilarity" and config.miner_params == {"epsilon": 0.1} and config.frozen_bn is False
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".")]  # no temp files left


def _stop_at(epoch: int, step: int):
    def hook(info: StepInfo) -> None:
        if (info.epoch, info.step) == (epoch, step):
            raise KeyboardInterrupt

    return hook


def test_interrupt_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=8, size=32)
    config = tiny_config(data, epochs=3, loss="margin", rho_reg=0.3)
    straight = train(config, tmp_path / "straight", progress=False, log=lambda text: None)
    messages = []
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False, log=messages.append, on_step=_stop_at(2, 1))
    assert "epoch 1 complete" in messages[-1] and "--resume" in messages[-1]
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [0, 1]
    assert load_model(tmp_path / "cut" / "last.pt").extra["epoch"] == 1
    resumed = train(None, tmp_path / "cut", resume=True, progress=False, log=lambda text: None)
    assert resumed.epochs == 3
    rows, expected = read_metrics(tmp_path / "cut"), read_metrics(tmp_path / "straight")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    for got, want in zip(rows, expected):
        for column in ("loss", *METRIC_COLUMNS):
            assert got[column] == pytest.approx(want[column], rel=1e-4, abs=1e-6, nan_ok=True), column
    a = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert straight.best_epoch == resumed.best_epoch
    # a finished run resumes to nothing; a resumed run may not change what it trains
    again = train(None, tmp_path / "cut", resume=True, progress=False, log=lambda text: None)
    assert again.epochs == 3 and len(read_metrics(tmp_path / "cut")) == 4
    with pytest.raises(CarprobeError, match="loss 'triplet'.*may only change"):
        train(None, tmp_path / "cut", resume=True, overrides={"loss": "triplet"}, log=lambda text: None)
    # loss parameters given without the table's defaults (as the API allows) compare filled in
    again = train(None, tmp_path / "cut", resume=True, overrides={"loss_params": {"margin": 0.2}},
                  progress=False, log=lambda text: None)
    assert again.epochs == 3
    with pytest.raises(CarprobeError, match="loss_params.*may only change"):
        train(None, tmp_path / "cut", resume=True, overrides={"loss_params": {"margin": 0.3}}, log=lambda text: None)
    with pytest.raises(CarprobeError, match="holds a training run already"):
        train(config, tmp_path / "cut", progress=False, log=lambda text: None)


def test_render_set_training_through_the_cli(tmp_path, capsys):
    from analysis.cli import main

    render_set = write_render_set(tmp_path / "set", per_class=4, size=32)
    out = tmp_path / "run"
    argv = ["train", "--data", str(render_set), "--label", "shape", "--loss", "triplet", "--rho-reg", "0.3",
            "--arch", "resnet18", "--dim", "16", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
            "--samples-per-class", "2", "--lr", "1e-3", "--workers", "0", "--device", "cpu",
            "--loss-param", "margin=0.1", "--loss-param", "miner.cutoff=0.4", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "best Recall@1" in captured.out
    # progress on a log file (not a terminal): plain lines, no carriage-return fragments
    assert "\r" not in captured.err and re.search(r"^epoch 1/1: 2/2 \(100%\) .* loss=\d", captured.err, re.M)
    config = json.loads((out / "config.json").read_text())
    assert (config["label"], config["rho_reg"], config["data"]) == ("shape", 0.3, str(render_set.resolve()))
    assert config["loss_params"] == {"margin": 0.1}  # the table's defaults, overridden
    # triplet + ρ mines distance-weighted (Roth's ρ sampler): its parameters are the miner's
    assert config["miner_params"] == {"cutoff": 0.4, "nonzero_loss_cutoff": 4.0}
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert main(argv[:-2] + ["--epochs", "2", "--resume", "--out", str(out)]) == 0
    assert list(pd.read_csv(out / "metrics.csv")["epoch"]) == [0, 1, 2]


@pytest.mark.parametrize("extra,message", [
    (["--loss", "nope"], "unknown; allowed: contrastive, triplet, margin"),
    (["--loss", "triplet", "--label", "paint.color"], "not a column.*columns: file_name, index"),
    (["--loss", "triplet", "--label", "subset"], "some rows"),
    (["--loss", "triplet", "--weights", "/no/such.pth"], "--weights.*not found"),
    (["--loss", "arcface", "--rho-reg", "0.3"], "ρ-regularisation"),
    (["--loss", "triplet", "--batch-size", "64"], "needs 32 training classes"),
])
def test_cli_bad_input_is_a_carprobe_error(tmp_path, capsys, extra, message):
    from analysis.cli import main

    render_set = write_render_set(tmp_path / "set", per_class=2, size=16)
    code = main(["train", "--data", str(render_set), "--label", "shape", *extra, "--out", str(tmp_path / "r"),
                 "--device", "cpu", "--workers", "0"][: None] if "--label" not in extra else
                ["train", "--data", str(render_set), *extra, "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert code == 2
    import re

    assert re.search(message, capsys.readouterr().err), message


def test_cli_too_few_classes_and_list_losses(tmp_path, capsys):
    from analysis.cli import main

    few = write_image_folder(tmp_path / "few", per_class=2, size=16, shapes=SHAPES[:3])
    assert main(["train", "--data", str(few), "--loss", "triplet", "--out", str(tmp_path / "r")]) == 2
    assert "3 class(es)" in capsys.readouterr().err
    assert main(["train", "--list-losses"]) == 0
    table = capsys.readouterr().out
    assert "softtriple" in table and "MultiSimilarityMiner" in table


def test_report_section_plots_training_runs(run, tmp_path):
    from analysis.report import write_report
    from analysis.report.context import RESULTS_FORMAT

    results = tmp_path / "results"
    results.mkdir()
    manifest = {"format": RESULTS_FORMAT, "set": {"name": "synthetic"},
                "models": [{"name": "ms", "ref": str(run.run_dir / "best.pt")},
                           {"name": "untrained", "ref": "torchvision:resnet18"}]}
    (results / "results.json").write_text(json.dumps(manifest))
    from analysis.train import report_section

    html_path = write_report(results / "report.html", None, results, sections=[report_section.section])
    text = html_path.read_text()
    assert "Training runs" in text and "data:image/png;base64," in text and "multisimilarity" in text
    (results / "results.json").write_text(json.dumps({**manifest, "models": manifest["models"][1:]}))
    from analysis.report.context import load_context

    assert report_section.section(results, load_context(results, None, "t")) is None


def test_loss_params_are_checked_against_the_loss_table(capsys):
    from analysis.cli import main
    from analysis.train.losses import build_loss, parse_loss_params

    assert parse_loss_params("multisimilarity", ["alpha=3", "miner.epsilon=0.2"]) == ({"alpha": 3.0}, {"epsilon": 0.2})
    assert parse_loss_params("softtriple", ["centers_per_class=4"]) == ({"centers_per_class": 4}, {})
    loss, miner = parse_loss_params("triplet", ["margin=0.05", "miner.type_of_triplets=hard"])
    built = build_loss("triplet", 4, 8, loss, miner)
    assert built.loss.margin == 0.05 and built.miner.type_of_triplets == "hard"
    for item, message in (("alpha=1", "no parameter 'alpha'; allowed: margin, miner.margin, miner.type_of_triplets"),
                          ("margin", "expected KEY=VALUE"), ("margin=big", "a finite number expected"),
                          ("miner.margin=nan", "a finite number expected")):
        with pytest.raises(CarprobeError, match=re.escape(message)):
            parse_loss_params("triplet", [item])
    with pytest.raises(CarprobeError, match="centers_per_class=2.5.*an integer expected"):
        parse_loss_params("softtriple", ["centers_per_class=2.5"])
    assert main(["train", "--data", ".", "--loss", "arcface", "--loss-param", "miner.x=1", "--out", "o"]) == 2
    assert "allowed: margin, scale (see --list-losses)" in capsys.readouterr().err
    assert main(["train", "--data", ".", "--loss-param", "margin=1", "--out", "o"]) == 2
    assert "--loss-param: give --loss too" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["normalizedsoftmax", "triplet"])
def test_dim_0_trains_the_pooled_features_without_a_head(data, tmp_path, loss):
    """dim 0: the embedding is the trunk's pooled features (512-d for resnet18), so epoch 0 is the
    pretrained network's own geometry; proxies and the head are sized from the model, not from 0."""
    torch.manual_seed(0)
    result = train(tiny_config(data, loss=loss, dim=0, epochs=1, rho_reg=0.3 if loss == "triplet" else 0.0),
                   tmp_path / "run", progress=False, log=lambda text: None)
    model = load_model(result.run_dir / "last.pt")
    assert isinstance(model.head, torch.nn.Identity) and model.embedding_dim == 512
    assert model.embed(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert TrainConfig.read(result.run_dir).dim == 0
    with pytest.raises(CarprobeError, match=r"dim = -1: an integer >= 0"):
        tiny_config(data, dim=-1).resolved()
