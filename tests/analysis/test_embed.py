"""analysis.embed and `carprobe embed`: batched embeddings, the on-disk cache, bad images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from embed_fixtures import write_render_set
from PIL import Image

from analysis.cli import ANALYSIS_COMMANDS
from analysis.data import RenderSetData
from analysis.embed import embed_paths, embed_render_set, embedding_cache_path
from analysis.models import build_model, save_checkpoint
from blender_addon import cli as render_cli
from blender_addon.core.errors import CarprobeError

SMALL = {"resize": 32, "crop": 32}


def main(argv):
    # the real dispatch, with only this command (others' command modules may not exist yet)
    return render_cli.main(argv, {"embed": ANALYSIS_COMMANDS["embed"]})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", dim=8, random_init=True, preprocess=SMALL).eval()


@pytest.fixture(scope="module")
def template_set(tmp_path_factory):
    return write_render_set(tmp_path_factory.mktemp("embed") / "set")


@pytest.fixture
def render_set(template_set, tmp_path):
    """A fresh copy per test (tests corrupt and replace images); copying skips the render loop's fsyncs."""
    return Path(shutil.copytree(template_set, tmp_path / "set"))


class ForwardCounter:
    def __init__(self, module):
        self.images = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.images += inputs[0].shape[0]


def _reference(model, paths):
    transform = model.preprocess.transform()
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model(batch).numpy()


def test_embed_paths_matches_a_plain_forward(model, render_set):
    paths = RenderSetData(render_set).image_paths
    expected = _reference(model, paths)
    got = embed_paths(paths, model, batch_size=4, num_workers=0, progress=False)
    assert got.dtype == np.float32 and got.shape == (6, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # worker processes and a batch that does not divide the count give the same rows
    in_workers = embed_paths(paths, model, batch_size=4, num_workers=1, progress=False)
    np.testing.assert_allclose(in_workers, got, rtol=1e-5, atol=1e-6)
    normed = embed_paths(paths, model, batch_size=6, num_workers=0, progress=False, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-5)
    # amp is for CUDA only: on the CPU it changes nothing
    np.testing.assert_array_equal(embed_paths(paths, model, batch_size=4, num_workers=0, amp=True,
                                              device="cpu", progress=False), got)
    assert embed_paths([], model, progress=False).shape == (0, 8)


def test_embed_paths_keeps_training_mode(model, render_set):
    paths = RenderSetData(render_set).image_paths[:2]
    model.train()
    try:
        embed_paths(paths, model, num_workers=0, progress=False)
        assert model.training
    finally:
        model.eval()


def test_render_set_cache_hit_skips_the_model(model, render_set):
    counter = ForwardCounter(model)
    try:
        first = embed_render_set(render_set, model, batch_size=4, num_workers=0, progress=False)
        assert counter.images == 6
        data = RenderSetData(render_set)
        cache = embedding_cache_path(data, model)
        assert cache.is_file() and cache.parent == render_set / ".carprobe-cache" / "embeddings"
        assert cache.name == f"{model.fingerprint[:16]}-{data.set_hash[:16]}.npy"
        assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp files left
        second = embed_render_set(render_set, model, progress=False)
        assert counter.images == 6  # the second call did not run the model
        np.testing.assert_array_equal(first, second)
        normed = embed_render_set(render_set, model, progress=False, normalize=True)
        assert counter.images == 6
        np.testing.assert_allclose(normed, first / np.linalg.norm(first, axis=1, keepdims=True), rtol=1e-6)
        # no cache: computed again, nothing written
        embed_render_set(render_set, model, num_workers=0, progress=False, cache=False)
        assert counter.images == 12
        # a torn cache file is replaced, not trusted
        cache.write_bytes(b"\x93NUMPY torn")
        np.testing.assert_array_equal(embed_render_set(render_set, model, num_workers=0, progress=False), first)
        assert counter.images == 18
    finally:
        counter.handle.remove()


def test_cache_key_follows_model_and_images(model, render_set):
    embed_render_set(render_set, model, num_workers=0, progress=False)
    other = build_model("resnet18", dim=8, random_init=True, preprocess=SMALL).eval()
    embed_render_set(render_set, other, num_workers=0, progress=False)
    Image.new("RGB", (40, 32), (0, 0, 0)).save(render_set / "images" / "000004.png")  # re-rendered image
    changed = embed_render_set(render_set, model, num_workers=0, progress=False)
    assert len(list((render_set / ".carprobe-cache" / "embeddings").glob("*.npy"))) == 3
    np.testing.assert_allclose(changed[4], _reference(model, [render_set / "images" / "000004.png"])[0],
                               rtol=1e-4, atol=1e-5)


def test_cache_does_not_hide_an_image_damaged_in_place(model, render_set):
    import os

    embed_render_set(render_set, model, num_workers=0, progress=False)
    image = render_set / "images" / "000002.png"
    stat = image.stat()
    data = bytearray(image.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])  # same name, same size
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    with pytest.raises(CarprobeError, match=r"000002\.png: cannot be decoded"):
        embed_render_set(render_set, model, num_workers=0, progress=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_error_names_the_file(model, render_set, workers):
    bad = render_set / "images" / "000003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CarprobeError) as info:
        embed_render_set(render_set, model, batch_size=2, num_workers=workers, progress=False)
    message = str(info.value)
    assert str(bad) in message and "cannot be decoded" in message
    assert "Traceback" not in message  # the worker's traceback is stripped
    assert not list((render_set / ".carprobe-cache" / "embeddings").glob("*"))  # no cache, no temp files
    (render_set / "images" / "000005.png").unlink()
    bad.unlink()
    with pytest.raises(CarprobeError, match=r"000003\.png: file not found"):
        embed_paths(RenderSetData(render_set).image_paths, model, batch_size=2, num_workers=workers,
                    progress=False)


def test_bad_arguments(model, render_set):
    paths = RenderSetData(render_set).image_paths
    with pytest.raises(CarprobeError, match="batch size"):
        embed_paths(paths, model, batch_size=0)
    with pytest.raises(CarprobeError, match="workers"):
        embed_paths(paths, model, num_workers=-1)
    if not torch.cuda.is_available():
        with pytest.raises(CarprobeError, match="CUDA is not available"):
            embed_paths(paths, model, device="cuda")


def test_cli_embed(model, render_set, tmp_path, capsys):
    checkpoint = save_checkpoint(model, tmp_path / "model.pt")
    out = tmp_path / "emb.npy"
    assert main(["embed", str(render_set), "--model", str(checkpoint), "--out", str(out), "--quiet",
                 "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "6 images -> embeddings 6 x 8" in text and "cached at" in text
    np.testing.assert_allclose(np.load(out), _reference(model, RenderSetData(render_set).image_paths),
                               rtol=1e-4, atol=1e-5)
    assert main(["embed", str(render_set), "--model", str(checkpoint), "--quiet"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["embed", str(render_set), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main(["embed", str(render_set), "--model", str(checkpoint), "--workers", "many"]) == 2
    assert "argument --workers: 'many': must be 'auto' or a non-negative integer" in capsys.readouterr().err
    assert main(["embed", str(tmp_path), "--model", str(checkpoint)]) == 2
    assert "not a carprobe render set" in capsys.readouterr().err
    assert main(["embed", str(render_set), "--model", "torchvision:resnet18:4", "--quiet"]) == 2
    assert "--random-init" in capsys.readouterr().err
