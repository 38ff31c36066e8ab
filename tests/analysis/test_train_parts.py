"""Training building blocks without a CNN: losses, ρ-regularisation tuples, sampler, config, data split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_metric_learning import miners

from analysis.train import losses as L
from analysis.train.config import TrainConfig
from analysis.train.data import load_labelled_images, split_classes
from analysis.train.rho import RhoMiner
from analysis.train.sampler import ClassBalancedBatchSampler
from blender_addon.core.errors import CarprobeError

sys.path.insert(0, str(Path(__file__).parent))
from train_synthetic import SHAPES, write_image_folder, write_render_set  # noqa: E402

REQUIRED = ("contrastive", "triplet", "margin", "multisimilarity", "lifted", "npair", "ntxent", "proxynca",
            "proxyanchor", "normalizedsoftmax", "arcface", "cosface", "softtriple")


def _batch(n_classes=6, m=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_classes * m, dim, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(m)
    return x, labels


# --- losses -------------------------------------------------------------------------------

def test_every_required_loss_is_listed_with_its_miner_and_defaults():
    assert set(REQUIRED) <= set(L.LOSSES)
    table = L.loss_table()
    for name in REQUIRED:
        assert name in table
    assert "MultiSimilarityMiner" in table and "semihard" in table and "DistanceWeightedMiner" in table


@pytest.mark.parametrize("name,rho", [(n, 0.0) for n in REQUIRED] +
                         [(n, 0.5) for n in REQUIRED if L.LOSSES[n].rho])
def test_every_loss_trains_one_step(name, rho):
    torch.manual_seed(0)
    x, labels = _batch()
    net = torch.nn.Linear(16, 8)
    loss = L.build_loss(name, num_classes=6, embedding_dim=8, rho_reg=rho)
    params = list(net.parameters()) + loss.parameters()
    if L.LOSSES[name].kind == "classification" or name == "margin":
        assert loss.parameters(), f"{name}: its proxies/β must reach the optimizer"
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    value = loss(torch.nn.functional.normalize(net(x), dim=1), labels)
    assert torch.isfinite(value) and value.requires_grad
    optimizer.zero_grad()
    value.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters())), f"{name}: no gradient reached the net"
    if loss.parameters():
        assert any(not torch.equal(b, p) for b, p in zip(before[2:], loss.parameters()))


def test_rho_on_a_loss_without_mined_tuples_is_refused():
    with pytest.raises(CarprobeError, match="ρ-regularisation applies to"):
        L.build_loss("arcface", 4, 8, rho_reg=0.3)
    with pytest.raises(CarprobeError, match="loss"):
        TrainConfig(data="x", loss="proxynca", rho_reg=0.2).validate()


def test_loss_state_round_trips_with_rho_generator():
    a = L.build_loss("margin", 6, 8, rho_reg=0.4, seed=3)
    x, labels = _batch(dim=8)
    a(torch.nn.functional.normalize(x, dim=1), labels)
    b = L.build_loss("margin", 6, 8, rho_reg=0.4, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.rho.generator.get_state(), b.rho.generator.get_state())
    assert torch.equal(a.loss.beta, b.loss.beta)


# --- ρ-regularisation tuples ------------------------------------------------------------

def _embeddings(n_classes=8, m=4, seed=0):
    x, labels = _batch(n_classes, m, 16, seed)
    return torch.nn.functional.normalize(x, dim=1), labels


@pytest.mark.parametrize("base", [lambda: miners.DistanceWeightedMiner(0.5, 1.4),
                                  lambda: miners.TripletMarginMiner(0.2, type_of_triplets="all")])
def test_rho_p0_equals_the_base_triplet_miner(base):
    emb, labels = _embeddings()
    torch.manual_seed(5)
    expected = base()(emb, labels)
    torch.manual_seed(5)
    got = RhoMiner(0.0, base_miner=base(), tuples="triplet", seed=1)(emb, labels)
    assert all(torch.equal(e, g) for e, g in zip(expected, got))


def test_rho_p0_equals_the_base_pair_miner():
    emb, labels = _embeddings()
    expected = miners.MultiSimilarityMiner(0.1)(emb, labels)
    got = RhoMiner(0.0, base_miner=miners.MultiSimilarityMiner(0.1), tuples="pair")(emb, labels)
    assert all(torch.equal(e, g) for e, g in zip(expected, got))


def test_rho_p1_turns_every_triplet_into_anchor_anchor_samelabel():
    emb, labels = _embeddings()
    torch.manual_seed(5)
    a0, p0, n0 = miners.TripletMarginMiner(0.2, type_of_triplets="all")(emb, labels)
    torch.manual_seed(5)
    a, p, n = RhoMiner(1.0, base_miner=miners.TripletMarginMiner(0.2, type_of_triplets="all"))(emb, labels)
    assert len(a0) > 0 and torch.equal(a, a0)      # one tuple per base tuple, same anchors
    assert torch.equal(p, a)                        # Roth's (a, a, j)
    assert torch.all(labels[n] == labels[a]) and torch.all(n != a)


def test_rho_swaps_a_fraction_p_of_triplets_and_nothing_else():
    emb, labels = _embeddings(16, 4)
    base = RhoMiner(0.0)  # all triplets of the batch
    a0, p0, n0 = base(emb, labels)
    rho = RhoMiner(0.3, seed=7)
    a, p, n = rho(emb, labels)
    swapped = labels[n] == labels[a]
    fraction = swapped.float().mean().item()
    assert abs(fraction - 0.3) < 0.03, fraction    # thousands of triplets: binomial sd < 0.01
    assert rho.num_swapped == int(swapped.sum())
    assert torch.equal(a, a0)
    kept = ~swapped
    assert torch.equal(p[kept], p0[kept]) and torch.equal(n[kept], n0[kept])
    assert torch.equal(p[swapped], a[swapped])
    # j is uniform over the anchor's other same-class samples: each of the 3 shows up
    counts = torch.bincount((n[swapped] - (a[swapped] // 4) * 4), minlength=4)
    assert (counts > 0).sum() == 4 and counts.min() > 0


def test_rho_on_pairs_replaces_an_anchors_negatives_by_one_samelabel_pair():
    emb, labels = _embeddings(16, 2)
    a1_0, p_0, a2_0, n_0 = RhoMiner(0.0, tuples="pair")(emb, labels)  # all pairs
    rho = RhoMiner(1.0, tuples="pair", seed=2)
    a1, p, a2, n = rho(emb, labels)
    assert torch.all(labels[n] == labels[a2]) and torch.all(n != a2)
    assert sorted(a2.tolist()) == list(range(32))   # one negative pair per eligible anchor
    assert len(a1) == 0                             # m = 2: every positive pair is now a negative one
    mid = RhoMiner(0.5, tuples="pair", seed=2)
    a1, p, a2, n = mid(emb, labels)
    flipped = a2[labels[n] == labels[a2]]
    assert 6 <= len(flipped) <= 26 and mid.num_swapped == len(flipped)
    pos = set(zip(a1.tolist(), p.tolist()))
    for a, j in zip(a2[labels[n] == labels[a2]].tolist(), n[labels[n] == labels[a2]].tolist()):
        assert (a, j) not in pos                    # a pair is never both positive and negative
        assert int((a2 == a).sum()) == 1            # its other negatives are gone
    untouched = [a for a in range(32) if a not in set(flipped.tolist())]
    for a in untouched:
        assert int((a2 == a).sum()) == int((a2_0 == a).sum())


def test_rho_leaves_anchors_without_a_second_sample_alone():
    emb = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    labels = torch.tensor([0, 0, 1, 2, 3])
    a, p, n = RhoMiner(1.0)(emb, labels)
    assert torch.all(labels[n] == labels[a]) and set(a.tolist()) == {0, 1}
    a1, p1, a2, n2 = RhoMiner(1.0, tuples="pair")(emb, labels)
    singles = [2, 3, 4]
    for s in singles:  # their negative pairs survive unchanged
        assert int((a2 == s).sum()) == 4


# --- sampler ------------------------------------------------------------------------------

def test_class_balanced_batches_are_seeded_and_balanced():
    labels = np.repeat(np.arange(10), [6, 5, 4, 4, 3, 3, 3, 7, 2, 1])
    sampler = ClassBalancedBatchSampler(labels, batch_size=8, samples_per_class=2, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (len(labels) - 1) // 8
    for batch in batches:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(batch) == 8 and len(set(batch)) == 8 and len(classes) == 4 and set(counts) == {2}
        assert 9 not in classes  # a single image cannot be anchored with a positive
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    other = ClassBalancedBatchSampler(labels, 8, 2, seed=1)
    assert list(other) != batches
    with pytest.raises(CarprobeError, match="training classes"):
        ClassBalancedBatchSampler(labels, 40, 2)


# --- config ---------------------------------------------------------------------------------

def test_config_defaults_are_the_fair_setup():
    c = TrainConfig(data="x", loss="margin").resolved()
    assert (c.arch, c.dim, c.batch_size, c.samples_per_class, c.lr, c.weight_decay, c.seed, c.image_size) == \
        ("resnet50", 128, 112, 2, 1e-5, 4e-4, 0, 224)
    assert c.frozen_bn is False  # no pretrained weights given: BN statistics are trained


def test_config_round_trips_losslessly(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    config = TrainConfig(data=str(tmp_path), label="paint.color", loss="triplet", rho_reg=0.35, arch="resnet18",
                         dim=64, weights=str(weights), epochs=3, batch_size=24, samples_per_class=3, lr=2e-5,
                         head_lr=1e-4, lr_milestones=[2, 5], eval_train_images=100, seed=7, device="cpu", amp=False,
                         loss_params={"margin": 0.1}).resolved()
    assert config.frozen_bn is True and config.loss_params["margin"] == 0.1
    # triplet + ρ mines as Roth's ρ sampler: distance-weighted, no upper cap
    assert config.miner_params == {"cutoff": 0.5, "nonzero_loss_cutoff": 4.0}
    path = config.write(tmp_path / "run")
    back = TrainConfig.read(tmp_path / "run")
    assert back == config
    assert json.loads(path.read_text())["format"] == "carprobe-train-config"
    data = json.loads(path.read_text())
    data["bogus"] = 1
    with pytest.raises(CarprobeError, match="bogus"):
        TrainConfig.from_dict(data)


def test_config_names_bad_fields():
    with pytest.raises(CarprobeError) as info:
        TrainConfig(data="x", loss="nope", batch_size=7, samples_per_class=2, weights="/no/such/file").validate()
    text = str(info.value)
    assert "loss = 'nope'" in text and "multisimilarity" in text and "batch_size = 7" in text and "weights" in text
    with pytest.raises(CarprobeError, match="loss_params.*unknown bogus"):
        TrainConfig(data="x", loss="triplet", loss_params={"bogus": 1}).resolved()


# --- data -------------------------------------------------------------------------------------

def test_image_folder_and_render_set_split_by_sorted_class_names(tmp_path):
    folder = write_image_folder(tmp_path / "folder", per_class=2, size=16)
    train, test = split_classes(load_labelled_images(folder))
    assert train.class_names == list(SHAPES[:4]) and test.class_names == list(SHAPES[4:])
    assert len(train) == len(test) == 8 and set(train.labels) == set(test.labels) == {0, 1, 2, 3}
    assert all(Path(p).parent.name == train.class_names[y] for p, y in zip(train.paths, train.labels))
    render_set = write_render_set(tmp_path / "set", per_class=2, size=16)
    train, test = split_classes(load_labelled_images(render_set, "shape"))
    assert train.class_names == list(SHAPES[:4]) and len(test) == 8
    train, test = split_classes(load_labelled_images(render_set, "car_id"))  # 5 ids → 3 train, 2 test
    assert train.class_names == ["car-0", "car-1", "car-2"] and test.class_names == ["car-3", "car-4"]
    with pytest.raises(CarprobeError, match="not a column.*columns: file_name, index, seed, car_id"):
        load_labelled_images(render_set, "paint.color")
    with pytest.raises(CarprobeError, match="at least 4 classes"):
        split_classes(load_labelled_images(write_image_folder(tmp_path / "few", 2, 16, shapes=SHAPES[:3])))
