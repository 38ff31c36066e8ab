"""The metric conventions of Kobs et al. and Roth et al., each pinned by a case that a wrong recipe
fails: which factors are binned, how neighbours tie, NR-Prec's chance level and ceiling, blockwise
retrieval, and the bootstrap intervals of the factor tables."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.metrics import (SIGNIFICANT_Z, bootstrap_mean_ci, check_bins, continuous_factors, factor_labels,
                              nr_precision, retrieval_metrics, silhouette_by_factor)
from analysis.metrics import _knn
from blender_addon.core.errors import CarprobeError
from blender_addon.core.spec import parse_spec

SPEC = """
schema = 1
name = "binning"
[design]
kind = "random"
count = 48
seed = 1
[camera]
azimuth = { range = [0.0, 345.0, 15.0] }
[lighting]
kind = "sun"
sun_azimuth = { uniform = [0.0, 360.0] }
sun_elevation = { normal = [45.0, 10.0] }
"""


def spec_info(text: str = SPEC) -> dict:
    return {"spec": parse_spec(tomllib.loads(text), None, check_files=False).resolved()}


# --- binning ---------------------------------------------------------------------------

def test_continuous_factors_are_the_uniform_and_normal_draws():
    assert continuous_factors(spec_info()) == {"lighting.sun_azimuth", "lighting.sun_elevation"}
    assert continuous_factors(None) == set()


def test_listed_values_stay_classes_however_many():
    # Kobs et al.'s 24 camera azimuths are 24 classes; a uniform draw is cut into quantile bins
    rng = np.random.default_rng(0)
    azimuth = pd.Series(np.tile(np.arange(0.0, 360.0, 15.0), 4))
    labels, binning = factor_labels(azimuth, bins=8, continuous=False)
    assert binning == "none" and len(np.unique(labels)) == 24
    sun = pd.Series(rng.uniform(0, 360, 96))
    labels, binning = factor_labels(sun, bins=8, continuous=True)
    assert binning == "8 quantile bins" and len(np.unique(labels)) == 8
    labels, binning = factor_labels(sun, bins="none", continuous=True)
    assert binning == "none" and len(np.unique(labels)) == 96
    # without a spec: continuous only when no value repeats
    assert factor_labels(azimuth)[1] == "none" and factor_labels(sun, bins=4)[1] == "4 quantile bins"


def test_tables_record_binning_from_the_spec():
    rng = np.random.default_rng(1)
    n = 96
    meta = pd.DataFrame({"subset": "", "camera.azimuth": np.tile(np.arange(0.0, 360.0, 15.0), 4),
                         "lighting.sun_azimuth": rng.uniform(0, 360, n)})
    X = rng.normal(size=(n, 4))
    cont = continuous_factors(spec_info())
    scores, per_value, _ = silhouette_by_factor(X, meta, models=["m"], measure="both", bins=4, continuous=cont)
    by = scores.set_index(["factor", "metric"])
    assert by.loc[("camera.azimuth", "silhouette"), "binning"] == "none"
    assert by.loc[("camera.azimuth", "nr_precision"), "n_labels"] == 24
    assert by.loc[("lighting.sun_azimuth", "nr_precision"), "binning"] == "4 quantile bins"
    assert bool(by.loc[("lighting.sun_azimuth", "silhouette"), "binned"])
    assert set(per_value["binning"]) == {"none", "4 quantile bins"}
    scores, _, _ = silhouette_by_factor(X, meta, models=["m"], measure="silhouette", bins=None, continuous=cont)
    assert (scores["binning"] == "none").all()


@pytest.mark.parametrize("bad", [1, 0, "x", 2.5, True])
def test_bins_refuses_bad_values(bad):
    with pytest.raises(CarprobeError, match="expected an integer >= 2, or 'none'"):
        check_bins(bad)


# --- ties --------------------------------------------------------------------------------

def test_near_tie_is_ranked_in_float64():
    # 40 queries, each with a neighbour at distance 1 + 4e-8 (listed first) and one at distance 1:
    # equal to float32 precision, so float32 ranking gets about half of them wrong
    groups = 40
    X = np.zeros((3 * groups, 2 * groups))
    for g in range(groups):
        X[3 * g, 2 * g] = X[3 * g + 1, 2 * g] = X[3 * g + 2, 2 * g] = 10.0
        X[3 * g + 1, 2 * g + 1] = 1.0 + 4e-8
        X[3 * g + 2, 2 * g + 1] = -1.0
    nbrs = _knn.nearest_neighbours(torch.tensor(X), 1, "euclidean", torch.device("cpu"))
    assert nbrs[0::3, 0].tolist() == list(range(2, 3 * groups, 3))
    labels = np.tile([0, 1, 0], groups) + 2 * np.repeat(np.arange(groups), 3)
    # every query finds its same-label neighbour; the farther rows (label 1) find the query
    recall = retrieval_metrics(X, labels, ks=[1], metric="euclidean", nmi=False)["recall@1"]
    assert recall == pytest.approx(1.0)


def test_exact_ties_go_to_the_lower_index_in_every_chunking():
    # four copies of one point: every row's neighbours at distance 0 come in index order
    X = torch.tensor(np.vstack([np.zeros((4, 3)), np.ones((4, 3))]), dtype=torch.float64)
    for chunk in (None, 1, 3):
        nbrs = _knn.nearest_neighbours(X, 5, "euclidean", torch.device("cpu"), chunk)
        assert nbrs[0, :3].tolist() == [1, 2, 3] and nbrs[3, :3].tolist() == [0, 1, 2]
        assert nbrs[0, 3:].tolist() == [4, 5]  # the next distance also ties: lowest indices first
    # so a tie decides Recall@1 the same way every time: row 0's nearest is row 1 (label b)
    labels = ["a", "b", "a", "a", "c", "c", "c", "c"]
    assert retrieval_metrics(X, labels, ks=[1], metric="euclidean", nmi=False)["recall@1"] == pytest.approx(
        (0 + 0 + 1 + 1 + 1 + 1 + 1 + 1) / 7)  # b is alone: not a query; a-rows 2, 3 find row 0


def test_retrieval_is_the_same_in_small_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 5))
    labels = rng.integers(0, 3, 120)
    whole = retrieval_metrics(X, labels, nmi=False)
    monkeypatch.setattr(_knn, "_CHUNK_ENTRIES", 200)  # 1 row per chunk
    assert retrieval_metrics(X, labels, nmi=False) == pytest.approx(whole, abs=1e-12)
    assert nr_precision(X, labels).mean == pytest.approx(nr_precision(X, labels, chunk_size=7).mean, abs=1e-12)


# --- NR-Prec significance ----------------------------------------------------------------

def test_nrprec_class_share_counts_only_non_singleton_images():
    # classes of 4 and 4 far apart, plus 2 singletons: Kobs's p = 4 / 8, not 4 / 10
    X = np.vstack([np.zeros((4, 2)), np.full((4, 2), 100.0), [[500.0, 0.0]], [[0.0, 500.0]]])
    X += np.random.default_rng(0).normal(scale=0.01, size=X.shape)
    res = nr_precision(X, [0, 0, 0, 0, 1, 1, 1, 1, 2, 3])
    r, p = 3, 0.5
    assert res.z[:8] == pytest.approx(np.full(8, (r - r * p) / math.sqrt(r * p * (1 - p))))
    assert np.isnan(res.z[8:]).all()
    assert res.max_mean == pytest.approx(math.sqrt(3.0)) and not res.can_reach_significance


def test_nrprec_flags_subsets_too_small_for_significance():
    rng = np.random.default_rng(4)
    small = pd.DataFrame({"subset": "", "paint.color": np.repeat(["red", "blue", "green"], 3)})
    X = np.repeat(np.eye(3) * 10, 3, axis=0) + rng.normal(scale=0.01, size=(9, 3))
    scores, _, notes = silhouette_by_factor(X, small, models=["m"], measure="nrprec")
    row = scores.iloc[0]
    # perfect clusters, yet 3 images per value cap the mean z at sqrt(2 * (2/3) / (1/3)) = 2
    assert row["value"] == pytest.approx(2.0) and row["max_attainable"] == pytest.approx(2.0)
    assert row["max_attainable"] < SIGNIFICANT_Z
    assert any("cannot reach significance" in n for n in notes)
    big = pd.DataFrame({"subset": "", "paint.color": np.repeat(["red", "blue", "green"], 12)})
    X = np.repeat(np.eye(3) * 10, 12, axis=0) + rng.normal(scale=0.01, size=(36, 3))
    scores, _, notes = silhouette_by_factor(X, big, models=["m"], measure="nrprec")
    assert scores["max_attainable"].iloc[0] > SIGNIFICANT_Z and not notes


def test_nrprec_refuses_a_single_shared_label():
    with pytest.raises(CarprobeError, match="only one label is shared"):
        nr_precision(np.arange(8.0).reshape(4, 2), ["a", "a", "b", "c"])


# --- bootstrap intervals ----------------------------------------------------------------

def test_bootstrap_interval_has_the_normal_width():
    rng = np.random.default_rng(5)
    values = rng.normal(loc=0.3, scale=1.0, size=400)
    low, high = bootstrap_mean_ci(values)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.15)
    assert bootstrap_mean_ci(np.full(50, 0.2)) == pytest.approx((0.2, 0.2))
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0, np.nan]))


def test_factor_tables_carry_intervals_over_images():
    rng = np.random.default_rng(6)
    meta = pd.DataFrame({"subset": "", "paint.color": np.repeat(["red", "blue"], 30)})
    X = np.repeat(np.eye(2), 30, axis=0) + rng.normal(scale=0.8, size=(60, 2))
    scores, _, _ = silhouette_by_factor(X, meta, models=["m"], measure="both")
    assert {"ci_low", "ci_high"} <= set(scores.columns)
    assert ((scores["ci_low"] < scores["value"]) & (scores["value"] < scores["ci_high"])).all()
    again, _, _ = silhouette_by_factor(X, meta, models=["m"], measure="both")
    pd.testing.assert_frame_equal(scores, again)  # seeded
