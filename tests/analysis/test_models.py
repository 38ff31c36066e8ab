"""analysis.models: building, preprocessing, fingerprints, frozen BN, checkpoints, TorchScript,
reality-check folders and the errors users see."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import models
from analysis.models import (BNInception, EmbeddingModel, Preprocess, build_model, load_model,
                             load_reality_check, save_checkpoint)
from blender_addon.core.errors import CarprobeError

SMALL = {"resize": 32, "crop": 32}  # small inputs keep CPU tests fast


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache: tests must never see (or fetch) real weights."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("resnet18", dim=16, random_init=True, preprocess=SMALL).eval()


@pytest.fixture(scope="module")
def bninception_model():
    torch.manual_seed(1)
    model = build_model("bninception", dim=128, random_init=True).eval()
    # random running stats, so a loader that ignored BN buffers would give other outputs
    for bn in model.batch_norms():
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return model


def test_forward_shapes_and_embed_normalises(tiny):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        raw, normed = tiny(x), tiny.embed(x)
    assert raw.shape == (3, 16) and tiny.embedding_dim == 16
    assert torch.allclose(normed.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(normed, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)
    tiny.normalize = False
    try:
        with torch.no_grad():
            assert torch.equal(tiny.embed(x), raw)
    finally:
        tiny.normalize = True


def test_no_head_gives_trunk_features():
    model = build_model("resnet18", dim=0, random_init=True)
    assert model.embedding_dim == 512
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


def test_preprocess_transform_scale_bgr_mean_std():
    image = Image.new("RGB", (80, 60), (255, 128, 0))
    rgb = Preprocess(resize=32, crop=32).transform()(image)
    assert rgb.shape == (3, 32, 32) and rgb.dtype == torch.float32
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(models.IMAGENET_MEAN)) / torch.tensor(models.IMAGENET_STD)
    assert torch.allclose(rgb[:, 16, 16], expected, atol=1e-4)
    bgr = models.PRESETS["reality-check"].transform()(image)
    assert bgr.shape == (3, 227, 227)
    assert torch.allclose(bgr[:, 100, 100], torch.tensor([0 - 104.0, 128 - 117.0, 255 - 128.0]), atol=1e-3)


def test_reality_check_preprocess_matches_the_published_pipeline():
    """Resize 256 → CenterCrop 227 → ToTensor → ×255 → RGB→BGR → −mean (torchvision v1, on PIL)."""
    from torchvision import transforms

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8))
    published = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(227), transforms.ToTensor(),
        transforms.Lambda(lambda x: x[[2, 1, 0]] * 255),
        transforms.Normalize([104, 117, 128], [1, 1, 1])])
    ours = models.PRESETS["reality-check"].transform()(image)
    assert torch.allclose(ours, published(image), atol=1e-3)


def test_preprocess_round_trip_and_validation():
    p = Preprocess(resize=300, crop=227, mean=(104, 117, 128), std=(1, 1, 1), bgr=True, scale=255)
    assert Preprocess.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(CarprobeError, match="scale"):
        Preprocess(scale=10)
    with pytest.raises(CarprobeError, match="crop"):
        Preprocess(crop=-3)
    with pytest.raises(CarprobeError, match="unknown field.*size"):
        Preprocess.from_dict({"size": 3})


def test_fingerprint_stable_and_sensitive(tiny):
    first = tiny.fingerprint
    assert first == tiny.fingerprint and len(first) == 64
    twin = build_model("resnet18", dim=16, random_init=True, preprocess=SMALL)
    twin.load_state_dict(tiny.state_dict())
    assert twin.fingerprint == first
    twin.eval()
    with torch.no_grad():
        twin.head.bias.add_(1e-3)
    twin.train()  # training resets the cached weights hash
    twin.eval()
    changed = twin.fingerprint
    assert changed != first
    twin.normalize = False  # config changes count even after the weights were hashed
    assert twin.fingerprint != changed
    other_prep = build_model("resnet18", dim=16, random_init=True, preprocess={"resize": 32, "crop": 28})
    other_prep.load_state_dict(tiny.state_dict())
    assert other_prep.fingerprint != first


def test_frozen_bn_stays_frozen_in_train():
    model = build_model("resnet18", dim=8, random_init=True, frozen_bn=True)
    model.train()
    assert model.training and model.trunk.layer1.training
    bns = model.batch_norms()
    assert bns and all(not bn.training for bn in bns)
    # Roth et al. freeze only the running statistics; the affine weights keep training
    assert all(p.requires_grad for bn in bns for p in bn.parameters())
    assert model.trunk.conv1.weight.requires_grad and model.head.weight.requires_grad
    before = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 5 + 3)  # a train-mode forward must not move running stats
    assert torch.equal(bns[0].running_mean, before)
    unfrozen = build_model("resnet18", dim=8, random_init=True).train()
    assert all(bn.training for bn in unfrozen.batch_norms())


def test_no_weights_offline_is_a_clear_error():
    with pytest.raises(CarprobeError) as info:
        build_model("resnet50")
    message = str(info.value)
    assert "resnet50" in message and "--random-init" in message and "never downloads" in message
    with pytest.raises(CarprobeError, match="random-init"):
        load_model("torchvision:resnet18")


def test_weights_from_hub_cache_and_local_file(tmp_path, tiny):
    trunk_state = {k: v for k, v in tiny.trunk.state_dict().items()}
    trunk_state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet file's classifier is dropped
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(trunk_state, hub / "resnet18-f37072fd.pth")
    from_hub = build_model("resnet18", dim=16).eval()
    assert torch.equal(from_hub.trunk.conv1.weight, tiny.trunk.conv1.weight)
    local = tmp_path / "full.pth"
    torch.save(tiny.state_dict(), local)  # trunk.* + head.*: the whole model
    from_file = build_model("resnet18", dim=16, weights=local, preprocess=SMALL).eval()
    assert from_file.fingerprint == tiny.fingerprint
    with pytest.raises(CarprobeError, match="do not fit"):
        build_model("resnet34", dim=16, weights=local)
    with pytest.raises(CarprobeError, match="not found"):
        build_model("resnet18", weights=tmp_path / "missing.pth")


def test_checkpoint_round_trip_same_outputs(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "sub" / "model.pt", extra={"loss": "margin", "epochs": 2})
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "carprobe-model" and raw["version"] == 1
    assert {"arch", "dim", "normalize", "distance", "preprocess", "state_dict", "extra"} <= set(raw)
    loaded = load_model(path)
    assert isinstance(loaded, EmbeddingModel) and not loaded.training
    assert loaded.preprocess == tiny.preprocess and loaded.distance == tiny.distance
    assert loaded.extra == {"loss": "margin", "epochs": 2}
    assert loaded.fingerprint == tiny.fingerprint
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), tiny(x), atol=1e-6)
    with pytest.raises(CarprobeError, match="JSON"):
        save_checkpoint(tiny, tmp_path / "bad.pt", extra={"x": object()})


class _Scriptable(torch.nn.Module):
    """A small network for the TorchScript round trip (tracing a ResNet takes seconds)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 12)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_torchscript_round_trip_with_sidecar(tmp_path):
    torch.manual_seed(2)
    net = _Scriptable().eval()
    path = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, yet users have such files
        torch.jit.script(net).save(str(path))
    (tmp_path / "model.json").write_text(json.dumps({"preprocess": SMALL, "distance": "dot", "normalize": False}))
    loaded = load_model(path)
    assert loaded.embedding_dim == 12 and loaded.preprocess.crop == 32
    assert loaded.distance == "dot" and loaded.normalize is False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    # the --preprocess override wins over the sidecar; without either, ImageNet defaults
    assert load_model(path, preprocess="imagenet").preprocess == models.PRESETS["imagenet"]
    (tmp_path / "model.json").unlink()
    assert load_model(path).preprocess == models.PRESETS["imagenet"]
    (tmp_path / "model.json").write_text(json.dumps({"mean": [0, 0, 0]}))
    with pytest.raises(CarprobeError, match="unknown key.*mean"):
        load_model(path)


class _FeatureMap(torch.nn.Module):
    """A trunk without pooling: (B, 4, H, W) out, which must never pass for an embedding."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class _FixedInput(torch.nn.Module):
    """Flattens a 16 x 16 input into a Linear: any other input size fails inside the model."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 16 * 16, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _script(net, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net.eval()).save(str(path))
    return path


def test_torchscript_with_wrong_output_rank_or_input_size_is_refused(tmp_path):
    feature_map = _script(_FeatureMap(), tmp_path / "features.ts")
    (tmp_path / "features.json").write_text(json.dumps({"preprocess": SMALL}))
    with pytest.raises(CarprobeError, match=r"features\.ts: TorchScript model returned \(1, 4, 30, 30\).*"
                                            r"must return \(batch, dim\)"):
        load_model(feature_map)
    fixed = _script(_FixedInput(), tmp_path / "fixed.ts")
    with pytest.raises(CarprobeError, match=r"fixed\.ts: the model fails on a \(1, 3, 224, 224\) input.*"
                                            r"fixed\.json"):
        load_model(fixed)
    model = load_model(fixed, preprocess={"resize": 16, "crop": 16})  # its input size: works
    assert model.embedding_dim == 5


@pytest.mark.parametrize("field, value, message", [
    ("arch", "vgg16", r"arch 'vgg16': unknown"),
    ("dim", "128", r"dim = '128'; expected an integer >= 0"),
    ("dim", -3, r"dim = -3; expected an integer >= 0"),
    ("preprocess", {"crop": -1}, r"preprocess\.crop = -1"),
    ("preprocess", "/etc/passwd", r"preprocess = '/etc/passwd'; expected an object"),
    ("distance", "manhattan", r"distance 'manhattan'"),
])
def test_checkpoint_field_errors_name_the_file(tmp_path, tiny, field, value, message):
    path = save_checkpoint(tiny, tmp_path / "model.pt")
    data = torch.load(path, weights_only=True)
    data["state_dict"] = {}  # the field is refused before any weights load: keep the file small
    data[field] = value
    torch.save(data, path)
    with pytest.raises(CarprobeError, match=f"model\\.pt: checkpoint field {message}"):
        load_model(path)


def test_checkpoint_ref_reads_the_fingerprint_without_building(tmp_path, tiny, monkeypatch):
    from analysis.models import CheckpointRef, model_ref

    path = save_checkpoint(tiny, tmp_path / "tiny.pt")
    headless = build_model("resnet18", dim=0, random_init=True, preprocess=SMALL).eval()
    no_head = save_checkpoint(headless, tmp_path / "no_head.pt")
    loaded = {p: load_model(p) for p in (path, no_head)}
    overridden = load_model(path, preprocess="imagenet")
    monkeypatch.setattr(models, "build_model", lambda *a, **k: pytest.fail("the network was built"))
    ref = model_ref(path)
    assert isinstance(ref, CheckpointRef)
    assert ref.fingerprint == loaded[path].fingerprint == tiny.fingerprint
    assert (ref.name, ref.embedding_dim, ref.distance, ref.preprocess) == (tiny.name, 16, tiny.distance,
                                                                            tiny.preprocess)
    assert model_ref(no_head).fingerprint == loaded[no_head].fingerprint
    assert model_ref(no_head).embedding_dim == 512  # the trunk's width, stored for dim 0
    assert model_ref(path, preprocess="imagenet").fingerprint == overridden.fingerprint != ref.fingerprint
    monkeypatch.undo()
    assert ref.load().fingerprint == ref.fingerprint


def test_missing_and_unknown_model_errors(tmp_path, tiny):
    with pytest.raises(CarprobeError, match="not found.*accepted models"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(CarprobeError, match=r"junk\.pt.*unknown format.*TorchScript"):
        load_model(junk)
    bare = tmp_path / "bare.pt"
    torch.save(tiny.state_dict(), bare)
    with pytest.raises(CarprobeError, match="bare state dict"):
        load_model(bare)
    with pytest.raises(CarprobeError, match="torchvision:<arch>"):
        load_model("torchvision:vgg16")
    with pytest.raises(CarprobeError, match="reality-check"):
        load_model(tmp_path)  # a folder without saved_models


def test_torchvision_spec_string():
    model = load_model("torchvision:resnet18:24", random_init=True)
    assert model.embedding_dim == 24 and model.arch == "resnet18"


def test_bninception_key_names_match_pretrainedmodels(bninception_model):
    keys = set(bninception_model.trunk.state_dict())
    for key in ("conv1_7x7_s2.weight", "conv1_7x7_s2_bn.running_mean", "conv2_3x3_reduce.weight",
                "inception_3a_1x1.weight", "inception_3a_pool_proj_bn.bias", "inception_3c_double_3x3_2.weight",
                "inception_4e_3x3_bn.running_var", "inception_5b_pool_proj_bn.running_var",
                "inception_5b_double_3x3_2.bias"):
        assert key in keys
    assert not any(k.startswith("last_linear") for k in keys)
    assert "inception_3c_1x1.weight" not in keys and "inception_4e_pool_proj.weight" not in keys
    convs = [k for k in keys if k.endswith(".weight") and not k.split(".")[0].endswith("_bn")]
    assert len(convs) == 69  # 3 stem convs + 8 blocks x 7 + 2 reduction blocks x 5
    params = sum(p.numel() for p in bninception_model.trunk.parameters())
    assert params == 10_270_240  # BN-Inception without its 1000-class classifier
    with torch.no_grad():
        assert bninception_model.trunk(torch.zeros(1, 3, 64, 64)).shape == (1, BNInception.feature_dim)


def _write_reality_check(folder, model, epochs, with_nbt=True):
    saved = folder / "saved_models"
    saved.mkdir(parents=True)
    trunk = {k: v for k, v in model.trunk.state_dict().items() if with_nbt or "num_batches_tracked" not in k}
    head = {"weight": model.head.weight.detach(), "bias": model.head.bias.detach()}
    torch.save(trunk, saved / "trunk.pth")
    for epoch, scale in epochs:
        os.link(saved / "trunk.pth", saved / f"trunk_best{epoch}.pth")  # one 40 MB write, not several
        embedder = {f"net.0.{k}": v * scale for k, v in head.items()}
        embedder.update({f"last_linear.{k}": v * scale for k, v in head.items()})
        torch.save(embedder, saved / f"embedder_best{epoch}.pth")
    return saved


def test_reality_check_loader_picks_highest_epoch(tmp_path, bninception_model):
    experiment = tmp_path / "cars_multi_similarity_reproduction0"
    saved = _write_reality_check(experiment, bninception_model, [(3, 0.0), (12, 1.0)], with_nbt=False)
    torch.save({"x": torch.zeros(1)}, saved / "trunk_best40.pth")  # no embedder for 40: not usable
    model = load_model(experiment)
    assert model.extra["epoch"] == 12 and model.name == experiment.name
    assert model.distance == "cosine" and model.normalize and model.embedding_dim == 128
    p = model.preprocess
    assert (p.resize, p.crop, p.bgr, p.scale, p.mean, p.std) == (256, 227, True, 255, (104.0, 117.0, 128.0),
                                                                 (1.0, 1.0, 1.0))
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        assert torch.allclose(model(x), bninception_model(x), atol=1e-4)
    # the saved_models folder itself is accepted too, and an explicit epoch
    assert load_reality_check(saved, epoch=3).head.weight.abs().sum() == 0


def test_reality_check_kobs_layout_without_epoch(tmp_path, bninception_model):
    """Kobs et al.'s published models: saved_models/trunk_best.pth + embedder_best.pth."""
    experiment = tmp_path / "cub_triplet"
    saved = _write_reality_check(experiment, bninception_model, [("", 1.0)])
    model = load_model(experiment)
    assert model.extra["epoch"] is None and model.distance == "euclidean"
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        assert torch.allclose(model(x), bninception_model(x), atol=1e-4)
    with pytest.raises(CarprobeError, match="epoch 3 not available"):
        load_reality_check(saved, epoch=3)
    # numbered files, when present as well, win (powerful-benchmarker's own layout)
    os.link(saved / "trunk.pth", saved / "trunk_best7.pth")
    torch.save({"net.0.weight": torch.zeros(128, 1024), "net.0.bias": torch.zeros(128)}, saved / "embedder_best7.pth")
    assert load_model(experiment).extra["epoch"] == 7


def test_reality_check_errors(tmp_path, bninception_model):
    saved = tmp_path / "exp" / "saved_models"
    saved.mkdir(parents=True)
    torch.save({"net.0.weight": torch.zeros(128, 1024)}, saved / "embedder_best5.pth")
    torch.save(bninception_model.trunk.state_dict(), saved / "trunk_best4.pth")
    with pytest.raises(CarprobeError, match="no epoch has both"):
        load_model(tmp_path / "exp")
    bad = {k: v for k, v in bninception_model.trunk.state_dict().items() if not k.startswith("inception_5b")}
    torch.save(bad, saved / "trunk_best5.pth")
    torch.save({"net.0.weight": torch.zeros(128, 1024), "net.0.bias": torch.zeros(128)},
               saved / "embedder_best5.pth")
    with pytest.raises(CarprobeError, match="missing .*inception_5b"):
        load_model(tmp_path / "exp")


def test_load_model_moves_to_device(tiny):
    model = load_model(tiny, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(CarprobeError, match="device"):
        load_model(tiny, device="not-a-device")


def test_save_checkpoint_keeps_frozen_bn(tmp_path):
    model = build_model("resnet18", dim=8, random_init=True, frozen_bn=True)
    loaded = load_model(save_checkpoint(model, tmp_path / "f.pt"))
    loaded.train()
    assert all(not bn.training for bn in loaded.batch_norms())
    assert np.isclose(sum(p.numel() for p in loaded.parameters() if p.requires_grad),
                      sum(p.numel() for p in model.parameters() if p.requires_grad))


def test_random_init_torchvision_models_are_reproducible():
    from analysis.models import load_model

    first = load_model("torchvision:resnet18:8", random_init=True)
    second = load_model("torchvision:resnet18:8", random_init=True)
    assert first.fingerprint == second.fingerprint
