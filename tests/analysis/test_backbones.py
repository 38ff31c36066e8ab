"""Pretrained backbones and baselines: EfficientNet-Lite's ImageNet weights (mapped from the
reference package), imagenet:/untrained: model specs, --weights FILE for spec models in the
analysis commands, and --random-init leaving trained checkpoints alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from saliency_helpers import make_render_set, one_torch_thread  # noqa: F401 (autouse fixture)

from analysis.cli import ANALYSIS_COMMANDS
from analysis.efficientnet_lite import EfficientNetLite, from_reference, imagenet_weights_file
from analysis.models import (PRESETS, build_model, load_model, parse_model_spec, save_checkpoint,
                             weights_kind)
from blender_addon import cli as render_cli
from blender_addon.core.errors import CarprobeError

REFERENCE_NAMES = {"efficientnet_lite0": "efficientnet-lite0", "efficientnet_lite2": "efficientnet-lite2"}


def carprobe(*argv: str) -> int:
    return render_cli.main(list(argv), {name: ANALYSIS_COMMANDS[name] for name in ("embed", "saliency")})


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache: torchvision trunks only get weights the test hands them."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


@pytest.fixture(scope="module")
def render_set(tmp_path_factory):
    return make_render_set(tmp_path_factory.mktemp("backbones") / "set")


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_logits_equal_the_reference_package(variant):
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    state = torch.load(imagenet_weights_file(variant), map_location="cpu", weights_only=True)
    # the reference pads for one fixed size; 72 px is odd after three halvings, so "SAME" padding
    # of the odd stages (extra pixel bottom/right) is exercised too
    reference = reference_package.EfficientNet.from_name(REFERENCE_NAMES[variant], image_size=72).eval()
    reference.load_state_dict(state)
    ours = EfficientNetLite(variant, num_classes=1000).eval()
    ours.load_state_dict(from_reference(state))
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))
        # the loader's trunk gives the reference's pooled features, L2-normalised
        model = load_model(f"imagenet:{variant}")
        pooled = F.adaptive_avg_pool2d(reference.extract_features(x), 1).flatten(1)
        assert torch.allclose(model.embed(x), F.normalize(pooled, dim=1), atol=1e-6)
    assert model.embedding_dim == 1280 and model.normalize and weights_kind(model) == "ImageNet, no DML training"
    assert model.preprocess == PRESETS[variant]  # (x·255 − 127) / 128
    p = model.preprocess
    assert (p.scale, p.mean, p.std, p.bgr) == (255, (127.0,) * 3, (128.0,) * 3, False)


def test_imagenet_features_differ_from_random_init_and_untrained_seeds():
    x = torch.rand(2, 3, 64, 64)
    imagenet = load_model("imagenet:efficientnet_lite0")
    untrained = load_model("untrained:efficientnet_lite0")
    again = load_model("untrained:efficientnet_lite0")
    other = load_model("untrained:efficientnet_lite0:seed=1:size=64")
    with torch.no_grad():
        a, b, c, d = (m.embed(x) for m in (imagenet, untrained, again, other))
    assert (a - b).abs().max() > 0.01 and (b - d).abs().max() > 1e-3
    assert torch.equal(b, c) and untrained.fingerprint == again.fingerprint != other.fingerprint
    assert untrained.name == "untrained:efficientnet_lite0" and weights_kind(untrained) == "random init"
    # size=S: the arch's own normalisation at S px, as the trainer's test transform
    assert (other.preprocess.crop, other.preprocess.resize, other.preprocess.mean) == (64, 73, (127.0,) * 3)
    # pretrained BN statistics are not the fresh ones (1 and 0) of a random init
    assert not torch.equal(imagenet.trunk.stem.bn.running_var, untrained.trunk.stem.bn.running_var)


def test_model_spec_grammar():
    assert parse_model_spec("torchvision:resnet18") == parse_model_spec("torchvision:resnet18:128")
    spec = parse_model_spec("untrained:resnet18:16:seed=3")
    assert (spec.kind, spec.arch, spec.dim, spec.seed, spec.pretrained) == ("untrained", "resnet18", 16, 3, False)
    assert parse_model_spec("imagenet:efficientnet_lite2").dim == 0
    assert parse_model_spec("imagenet:efficientnet_lite0:size=128").size == 128
    for bad, message in (("imagenet:efficientnet_lite0:64", "takes no dim"),
                         ("untrained:vgg16", "with arch in"), ("untrained:resnet18:seed=x", "seed 'x'"),
                         ("imagenet:resnet18:seed=1", "applies to untrained"), ("untrained:resnet18:size=8", ">= 16"),
                         ("torchvision:resnet18:big", "neither a dim")):
        with pytest.raises(CarprobeError, match=message):
            parse_model_spec(bad)


def test_torchvision_random_init_is_the_untrained_baseline():
    model = load_model("torchvision:resnet18:8", random_init=True)
    assert model.name == "untrained:resnet18:8" and weights_kind(model) == "random init"
    with pytest.raises(CarprobeError, match="no pretrained weights for resnet18"):
        load_model("imagenet:resnet18")  # empty hub cache, no --weights: never a silent random trunk


def test_embed_with_weights_file_for_a_torchvision_spec(render_set, tmp_path, capsys):
    torch.manual_seed(5)
    imagenet_like = build_model("resnet18", dim=0, random_init=True).trunk.state_dict()
    imagenet_like["fc.weight"], imagenet_like["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet_like, weights)
    out = tmp_path / "emb.npy"
    assert carprobe("embed", str(render_set), "--model", "imagenet:resnet18", "--weights", str(weights),
                    "--preprocess", str(_preprocess_file(tmp_path)), "--workers", "0", "--no-cache", "--normalize",
                    "--out", str(out), "--quiet") == 0
    capsys.readouterr()
    expected = build_model("resnet18", dim=0, weights=weights, preprocess={"resize": 32, "crop": 32}).eval()
    from analysis.data import RenderSetData
    from analysis.embed import embed_paths

    reference = embed_paths(RenderSetData(render_set).image_paths, expected, num_workers=0, device="cpu",
                            progress=False, normalize=True)
    np.testing.assert_allclose(np.load(out), reference, atol=1e-5)
    assert carprobe("embed", str(render_set), "--model", "torchvision:resnet18:8", "--weights", str(weights),
                    "--workers", "0", "--no-cache", "--quiet") == 0
    capsys.readouterr()
    # --weights on a model that carries its own weights, or a missing file: exit 2 with a reason
    checkpoint = save_checkpoint(expected, tmp_path / "m.pt")
    assert carprobe("embed", str(render_set), "--model", str(checkpoint), "--weights", str(weights)) == 2
    assert "applies to torchvision:<arch> and imagenet:<arch>" in capsys.readouterr().err
    assert carprobe("embed", str(render_set), "--model", "untrained:resnet18", "--weights", str(weights)) == 2
    assert "applies to torchvision:<arch> and imagenet:<arch>" in capsys.readouterr().err
    assert carprobe("embed", str(render_set), "--model", "imagenet:resnet18", "--weights", str(tmp_path / "no")) == 2
    assert "file not found" in capsys.readouterr().err


def _preprocess_file(folder):
    path = folder / "small.json"
    path.write_text(json.dumps({"resize": 32, "crop": 32}))
    return path


def test_random_init_keeps_trained_checkpoint_names(render_set, tmp_path):
    torch.manual_seed(0)
    trained = build_model("resnet18", dim=8, random_init=True, preprocess={"resize": 32, "crop": 32}, name="ms")
    checkpoint = save_checkpoint(trained, tmp_path / "ms.pt")
    out = tmp_path / "out"
    assert carprobe("saliency", str(render_set), "--models", str(checkpoint), "torchvision:resnet18:8",
                    "--random-init", "--method", "saliency", "--target", "norm", "--images", "1",
                    "--sanity-images", "0", "--device", "cpu", "--out", str(out), "--quiet") == 0
    manifest = json.loads((out / "saliency.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["ms", "untrained:resnet18:8"]


def test_train_efficientnet_lite_starts_from_imagenet_and_records_its_distance(tmp_path):
    import sys
    from pathlib import Path

    from analysis.train.config import TrainConfig
    from analysis.train.loop import train

    sys.path.insert(0, str(Path(__file__).parent))
    from train_synthetic import write_image_folder

    data = write_image_folder(tmp_path / "data", per_class=4, size=32)
    config = TrainConfig(data=str(data), loss="margin", arch="efficientnet_lite0", dim=16, image_size=32,
                         epochs=0, batch_size=8, samples_per_class=2, workers=0, device="cpu")
    run = train(config, tmp_path / "run", progress=False, log=lambda text: None)
    model = load_model(run.run_dir / "last.pt")
    # margin loss trains with Euclidean distance (pml's LpDistance), and the checkpoint says so
    assert model.distance == "euclidean" and model.arch == "efficientnet_lite0" and model.frozen_bn
    assert model.preprocess.mean == (127.0,) * 3 and model.preprocess.crop == 32
    state = torch.load(imagenet_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.trunk.stem.conv.weight, state["_conv_stem.weight"])
    assert model.extra["config"]["arch"] == "efficientnet_lite0" and weights_kind(model) == "trained"
