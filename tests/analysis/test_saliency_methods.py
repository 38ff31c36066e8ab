"""Attribution methods and targets on tiny models the tests build (known answers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import TinyEmbedder, one_torch_thread  # noqa: F401 (autouse fixture)

from analysis.saliency import masks, methods, targets
from blender_addon.core.errors import CarprobeError


@pytest.fixture
def images():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


FAST = {"n_steps": 4, "n_samples": 3, "window": 4, "stride": 4, "internal_batch_size": 8}


@pytest.mark.parametrize("method", methods.METHODS)
def test_every_method_gives_finite_input_sized_maps_and_repeats_exactly(method, images):
    model = TinyEmbedder(seed=0)
    target = targets.baseline_target(model, images)
    first = methods.attribute(model, images, method, target, **FAST)
    again = methods.attribute(model, images, method, target, **FAST)
    assert first.shape == (2, 16, 16) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).max() > 0
    assert np.array_equal(first, again)


@pytest.mark.parametrize("method", ["smoothgrad", "gradshap", "kobs2021"])
def test_noisy_methods_depend_on_the_seed_and_leave_the_global_rng_alone(method, images):
    model = TinyEmbedder(seed=0)
    target = targets.baseline_target(model, images)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = methods.attribute(model, images, method, target, seed=0, **FAST)
    assert torch.equal(torch.rand(1), expected_next)
    b = methods.attribute(model, images, method, target, seed=1, **FAST)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("method", ["saliency", "ig", "smoothgrad", "kobs2021", "gradshap", "occlusion"])
def test_model_that_sees_only_the_top_half_puts_its_mass_there(method):
    model = TinyEmbedder(seed=0, rows=slice(0, 8))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = methods.attribute(model, x, method, targets.norm_target(), **{**FAST, "window": 2, "stride": 2})
    top = np.zeros((16, 16), dtype=np.uint8)
    top[:8] = 1  # "body" = the half the model sees
    shares = np.array([masks.part_shares(m, top, 7) for m in maps])
    assert shares[:, 1] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["reference", "centroid", "baseline", "norm"])
def test_every_target_gives_one_scalar_per_image(kind, images):
    model = TinyEmbedder(seed=0)
    target = {"reference": lambda: targets.reference_target(model, images.flip(0)),
              "centroid": lambda: targets.centroid_target(model, np.ones((2, 8), dtype=np.float32)),
              "baseline": lambda: targets.baseline_target(model, images),
              "norm": targets.norm_target}[kind]()
    assert target.score(model, images, target.anchors).shape == (2,)
    maps = methods.attribute(model, images, "saliency", target)
    assert np.isfinite(maps).all() and maps.max() == pytest.approx(1.0)


def test_similarity_to_the_image_itself_has_zero_gradient(images):
    """Why the module refuses self-similarity as a target: the gradient vanishes at the optimum."""
    model = TinyEmbedder(seed=0)
    raw = {"normalize": "none"}
    own = methods.attribute(model, images, "saliency", targets.reference_target(model, images), **raw)
    other = methods.attribute(model, images, "saliency", targets.reference_target(model, images.flip(0)), **raw)
    assert np.abs(own).max() < 1e-4 * np.abs(other).max()


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot", "snr"])
def test_baseline_target_uses_the_models_own_distance(distance, images):
    model = TinyEmbedder(seed=0, distance=distance)
    target = targets.baseline_target(model, images)
    assert target.distance == distance
    e, black = model.embed(images), model.embed(torch.zeros(1, 3, 16, 16))
    expected = {"cosine": 1 - torch.nn.functional.cosine_similarity(e, black),
                "euclidean": (e - black).norm(dim=1), "dot": -(e * black).sum(dim=1),
                "snr": (e - black).var(dim=1) / e.var(dim=1)}[distance]
    assert torch.allclose(target.score(model, images, target.anchors), expected, atol=1e-5)


def test_black_image_follows_the_models_preprocessing():
    from analysis.models import Preprocess

    model = TinyEmbedder()
    model.preprocess = Preprocess(resize=16, crop=16, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), bgr=True,
                                  scale=255)
    black = targets.black_image(model, torch.zeros(1, 3, 16, 16))
    assert black[0, :, 0, 0].tolist() == [-104.0, -117.0, -128.0]


def test_kobs2021_maps_are_scaled_min_to_0_and_99th_percentile_to_1(images):
    model = TinyEmbedder(seed=0)
    maps = methods.attribute(model, images, "kobs2021", targets.baseline_target(model, images), n_samples=5)
    for m in maps:
        assert m.min() == 0.0 and m.max() == 1.0
        assert 0.01 <= (m == 1.0).mean() <= 0.03  # the top 1 % is clipped to 1


def test_ig_internal_batch_size_does_not_change_the_maps(images):
    model = TinyEmbedder(seed=0)
    target = targets.reference_target(model, images.flip(0))
    a = methods.attribute(model, images, "ig", target, n_steps=6)
    b = methods.attribute(model, images, "ig", target, n_steps=6, internal_batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradcam_uses_the_last_conv_block_or_a_named_layer(images):
    model = TinyEmbedder(seed=0)
    assert methods.find_layer(model, images) is model.features
    assert methods.find_layer(model, images, "features.0") is model.features[0]
    with pytest.raises(CarprobeError, match="not found"):
        methods.find_layer(model, images, "nope")
    maps = methods.attribute(model, images, "gradcam", targets.norm_target(), layer="features.0")
    assert maps.shape == (2, 16, 16)


def test_unknown_method_and_option_name_what_is_allowed(images):
    model = TinyEmbedder()
    with pytest.raises(CarprobeError, match="allowed: saliency, ig, gradshap"):
        methods.attribute(model, images, "lime", targets.norm_target())
    with pytest.raises(CarprobeError, match="unknown option"):
        methods.attribute(model, images, "ig", targets.norm_target(), steps=3)


def test_identity_centroids_leave_the_image_out_and_need_two_images_per_car():
    emb = np.array([[1.0, 0], [0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    labels = ["a", "a", "a", "b"]
    np.testing.assert_allclose(targets.identity_centroids(emb, labels, [0]), [[0.5, 1.0]])
    with pytest.raises(CarprobeError, match="only image of car_id 'b'"):
        targets.identity_centroids(emb, labels, [3])
    assert targets.reference_pairs(labels, [0, 2, 3]) == [1, 0, 0]


def test_baseline_images_black_blur_mean_and_seeded_noise(images):
    model = TinyEmbedder(seed=0)  # no preprocessing: black is 0, white 1
    black = targets.baseline_images(model, images, "black")
    assert black.shape == images.shape and torch.equal(black, targets.black_image(model, images).expand_as(images))
    assert torch.equal(targets.baseline_images(model, images, "mean"), torch.zeros_like(images))
    blur = targets.baseline_images(model, images, "blur")
    assert blur.shape == images.shape and blur.var() < 0.5 * images.var()  # smoothed, not replaced
    assert (blur.mean() - images.mean()).abs() < 0.1
    noise = targets.baseline_images(model, images, "uniform-noise", seed=3, indices=[7, 9])
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.2
    # an image's noise depends on (seed, its index), not on its batch
    alone = targets.baseline_images(model, images[1:], "uniform-noise", seed=3, indices=[9])
    assert torch.equal(alone[0], noise[1]) and not torch.equal(noise[0], noise[1])
    with pytest.raises(CarprobeError, match="baseline 'white': unknown; allowed: black, blur, mean, uniform-noise"):
        targets.baseline_images(model, images, "white")


@pytest.mark.parametrize("method", methods.BASELINE_METHODS)
def test_the_baseline_changes_the_maps_of_the_methods_that_use_one(method, images):
    model = TinyEmbedder(seed=0)
    target = targets.baseline_target(model, images)
    black = methods.attribute(model, images, method, target, **FAST)
    assert np.array_equal(black, methods.attribute(model, images, method, target, baseline="black", **FAST))
    blur = methods.attribute(model, images, method, target, baseline="blur", **FAST)
    assert not np.allclose(black, blur)
    assert methods.options_for_store(method, baseline="blur")["baseline"] == "blur"  # part of the store key
    # the target's reference image follows the baseline too
    noisy = targets.baseline_target(model, images, "uniform-noise", seed=1, indices=[0, 1])
    assert not torch.allclose(noisy.anchors, target.anchors)


def test_a_baseline_for_a_method_without_one_is_refused(images):
    model = TinyEmbedder(seed=0)
    with pytest.raises(CarprobeError, match="method 'saliency' uses no baseline; ig, gradshap, occlusion do"):
        methods.attribute(model, images, "saliency", targets.norm_target(), baseline="blur")
