"""Comparison metrics, mask shares, the sanity check and the map store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import TinyEmbedder, one_torch_thread  # noqa: F401 (autouse fixture)

from analysis.saliency import compare, masks, methods, sanity, targets
from analysis.saliency.store import MapStore
from blender_addon.core.errors import CarprobeError


@pytest.fixture
def images():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_identical_models_correlate_1_and_other_weights_lower_it(images):
    a, twin, other = TinyEmbedder(seed=0), TinyEmbedder(seed=0), TinyEmbedder(seed=5)
    maps = {name: methods.attribute(m, images, "saliency", targets.baseline_target(m, images))
            for name, m in (("a", a), ("twin", twin), ("other", other))}
    summary, per_image = compare.compare_models(maps)
    get = summary.set_index(["model_a", "model_b", "metric"])["mean"]
    for metric, same in (("spearman", 1), ("pearson", 1), ("js_nats", 0), ("iou", 1), ("ssim", 1)):
        assert get[("a", "twin", metric)] == pytest.approx(same, abs=1e-6)
    assert get[("a", "other", "spearman")] < 0.9
    assert set(summary.columns) == {"model_a", "model_b", "metric", "mean", "ci_low", "ci_high", "n"}
    assert len(per_image) == 3 * 5 * 4
    names, mat = compare.matrix(summary, "spearman")
    assert names == ["a", "twin", "other"] and np.allclose(mat, mat.T)


def test_metric_known_answers():
    rng = np.random.default_rng(0)
    a = rng.random((12, 12))
    assert compare.pearson(a, -a) == pytest.approx(-1)
    assert compare.spearman(a, a ** 3) == pytest.approx(1)  # monotone: ranks agree
    left, right = np.zeros((4, 4)), np.zeros((4, 4))
    left[:, :2], right[:, 2:] = 1, 1
    assert compare.js_divergence(left, right) == pytest.approx(np.log(2))  # disjoint supports: ln 2 nats
    # Kobs et al.'s definition: scipy's Jensen-Shannon distance (natural log) squared
    from scipy.spatial.distance import jensenshannon
    b = rng.random((12, 12))
    assert compare.js_divergence(a, b) == pytest.approx(jensenshannon(a.ravel() / a.sum(), b.ravel() / b.sum()) ** 2)
    assert compare.topk_iou(left, right, 0.5) == 0.0
    assert compare.ssim(a, a) == pytest.approx(1.0)
    assert compare.ssim(a, rng.random((12, 12))) < 0.5


def test_fisher_z_mean_and_intervals():
    r = np.array([0.5, 0.9])
    mean, lo, hi, n = compare.summarize(r, "spearman")
    assert mean == pytest.approx(np.tanh(np.arctanh(r).mean())) and n == 2
    assert lo < mean < hi
    mean, lo, hi, _ = compare.summarize(np.array([0.1, 0.2, 0.3]), "js_nats", method="bootstrap")
    assert mean == pytest.approx(0.2) and lo >= 0.1 and hi <= 0.3
    assert compare.summarize(np.array([0.1, 0.2, 0.3]), "js_nats", method="bootstrap") == (mean, lo, hi, 3)
    assert np.isnan(compare.summarize(np.array([0.4]), "iou")[1])


def test_part_shares_sum_to_1_and_pointing_game():
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 1:4] = 1  # body
    mask[3] = 6  # ground
    mask[2, 3] = 3  # a wheel pixel
    m = np.random.default_rng(1).random((4, 6))
    shares = masks.part_shares(m, mask, 7)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[3] == pytest.approx(m[2, 3] / m.sum())
    peak = np.zeros((4, 6))
    peak[1, 1] = 1
    assert masks.pointing_game(peak, mask, masks.car_ids(masks.part_names()))
    peak[0, 0] = 2
    assert not masks.pointing_game(peak, mask, masks.car_ids(masks.part_names()))
    with pytest.raises(CarprobeError, match="differs from mask shape"):
        masks.part_shares(m[:3], mask, 7)


def test_mask_tables_and_mask_geometry():
    from analysis.models import Preprocess

    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, 20:] = 1
    moved = masks.mask_to_input(mask, Preprocess(resize=10, crop=10))
    assert moved.shape == (10, 10) and set(np.unique(moved)) == {0, 1}  # nearest: ids stay ids
    assert (moved[:, :5] == 0).all() and (moved[:, 5:] == 1).all()
    names = masks.part_names({"mask_parts": {"background": 0, "body": 1}})
    assert names == ["background", "body"]
    maps = {"m": np.stack([np.ones((10, 10)), np.ones((10, 10))])}
    shares, summary, per_image = masks.mask_tables(maps, {"m": np.stack([moved, moved])}, names, [3, 4])
    assert shares["share"].sum() == pytest.approx(1.0)
    assert shares.set_index("part")["share"]["body"] == pytest.approx(0.5)
    assert summary.set_index("metric")["mean"]["car_share"] == pytest.approx(0.5)
    assert sorted(per_image["image"].unique()) == [3, 4]


def test_cascading_randomization_lowers_similarity_step_by_step(images):
    model = TinyEmbedder(seed=0)
    table = sanity.cascading_randomization(model, images, "saliency", lambda m: targets.baseline_target(m, images),
                                           metrics=["spearman"])
    curve = table.sort_values("step")["mean"].to_numpy()
    assert list(table["layer"]) == ["none", "head", "features.2", "features.0"]
    assert curve[0] == pytest.approx(1.0) and curve[-1] < 0.5 and curve[-1] < curve[0]
    # the original model is untouched
    again = methods.attribute(model, images, "saliency", targets.baseline_target(model, images))
    first = methods.attribute(TinyEmbedder(seed=0), images, "saliency", targets.baseline_target(model, images))
    assert np.array_equal(again, first)


def test_store_reuses_maps_and_keys_on_options(tmp_path):
    store = MapStore(tmp_path)
    calls = []

    def compute(missing):
        calls.append(list(missing))
        return np.stack([np.full((3, 3), i / 7, dtype=np.float32) for i in missing]), np.array(missing) % 9

    key = dict(model_name="model A", fingerprint="f1", method="ig", target="baseline", options={"n_steps": 4})
    first, first_peaks = store.get([4, 2], compute, **key)
    second, second_peaks = store.get([2, 9, 4], compute, **key)
    assert first_peaks.tolist() == [4, 2] and second_peaks.tolist() == [2, 0, 4]  # peaks travel with their maps
    assert calls == [[4, 2], [9]]
    np.testing.assert_allclose(second[:, 0, 0], [2 / 7, 9 / 7, 4 / 7], atol=1e-3)
    np.testing.assert_array_equal(first, second[[2, 0]])
    store.get([2], compute, **{**key, "options": {"n_steps": 8}})
    assert calls[-1] == [2]
    maps, indices, peaks, meta = MapStore.read(next(tmp_path.glob("*.npz")))
    assert maps.dtype == np.float16 and meta["fingerprint"] == "f1"


def test_pointing_game_interval_stays_in_unit_range():
    from analysis.saliency.masks import wilson_interval

    for hits, n in ((12, 12), (0, 12), (11, 12), (5, 10)):
        lo, hi = wilson_interval(hits, n)
        assert 0.0 <= lo <= hits / n <= hi <= 1.0
    lo, hi = wilson_interval(12, 12)
    assert hi == 1.0 and lo < 1.0  # all hits: still an interval, not a point
