"""Roth et al.'s fair setup where carprobe had drifted from it: frozen BatchNorm freezes only the
running statistics, loss parameters get no weight decay, ρ-regularisation builds on uncapped
distance-weighted sampling (and is labelled an extension on pair losses), and the toy example
shows what Roth's toy shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from pytorch_metric_learning import miners

from analysis.models import build_model
from analysis.train import losses as L
from analysis.train.config import TrainConfig
from analysis.train.loop import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from train_synthetic import write_image_folder  # noqa: E402


def test_frozen_batchnorm_freezes_statistics_and_trains_its_weights():
    torch.manual_seed(0)
    model = build_model("resnet18", dim=8, random_init=True, frozen_bn=True, preprocess="imagenet")
    bn = model.batch_norms()[0]
    stats = bn.running_mean.clone()
    weight = bn.weight.detach().clone()
    model.train()
    assert not bn.training and bn.weight.requires_grad
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.embed(torch.rand(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert torch.equal(bn.running_mean, stats)            # statistics: those of the trunk
    assert not torch.equal(bn.weight.detach(), weight)    # affine weights: trained


def test_loss_parameters_get_no_weight_decay(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=4, size=32)
    config = TrainConfig(data=str(data), loss="margin", arch="resnet18", dim=8, image_size=32, epochs=1,
                         batch_size=8, samples_per_class=2, workers=0, device="cpu", weight_decay=4e-4)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda text: None)
    trainer._setup()
    decay = {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups}
    assert decay == {"trunk": 4e-4, "head": 4e-4, "loss": 0.0}
    beta = trainer.loss.parameters()
    assert beta and any(p is beta[0] for g in trainer.optimizer.param_groups if g["name"] == "loss"
                        for p in g["params"])


def test_rho_builds_on_uncapped_distance_weighted_sampling():
    for name in ("triplet", "margin", "contrastive"):
        loss = L.build_loss(name, num_classes=4, embedding_dim=8, rho_reg=0.3)
        base = loss.rho.base_miner
        assert isinstance(base, miners.DistanceWeightedMiner), name
        assert base.nonzero_loss_cutoff > 2.0 and base.cutoff == 0.5  # unit-sphere distances never exceed 2
    # without ρ, triplet keeps FaceNet's semi-hard mining
    assert isinstance(L.build_loss("triplet", 4, 8).miner, miners.TripletMarginMiner)


def test_rho_on_pair_losses_is_labelled_carprobes_extension():
    assert [n for n, s in L.LOSSES.items() if L.rho_label(s) == "extension"] == ["multisimilarity", "lifted"]
    assert L.rho_label(L.LOSSES["margin"]) == "yes" and L.rho_label(L.LOSSES["arcface"]) == "no"
    rows = {line.split()[0]: line for line in L.loss_table().splitlines()[2:] if line.split()}
    assert "extension" in rows["multisimilarity"] and "extension" in rows["lifted"]
    assert "extension" not in rows["triplet"]


def test_toy_on_roths_setup_flattens_the_spectrum_and_says_what_it_shows(tmp_path, capsys):
    from analysis.train.toy import main

    assert main(["--out", str(tmp_path), "--seeds", "3"]) == 0
    per_seed = pd.read_csv(tmp_path / "toy.csv")
    decay = per_seed[per_seed["metric"] == "train_spectral_decay"].pivot(index="seed", columns="setting",
                                                                          values="value")
    # Roth's toy: spectral decay falls with ρ (0.48 -> ~0.01), in every seed
    assert (decay["rho"] < decay["plain"] - 0.2).all()
    summary = pd.read_csv(tmp_path / "toy_summary.csv").set_index(["setting", "metric"])
    assert summary.loc[("rho", "train_spectral_decay"), "ci_high"] < summary.loc[("plain", "train_spectral_decay"),
                                                                                  "ci_low"]
    out = capsys.readouterr().out
    assert "spectral decay (train): plain" in out and "lower with ρ in 3/3 seeds" in out
    assert "What it shows" in out and "Ablation, push only" in out
    assert "better generalisation" in out  # it says what it does not show
    assert (tmp_path / "toy.png").stat().st_size > 10_000
