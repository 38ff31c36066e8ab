"""analysis.metrics.silhouette: equal to scikit-learn to 1e-6, its conventions, sampling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_samples as sk_samples
from sklearn.metrics import silhouette_score as sk_score

from analysis.metrics import silhouette_estimate, silhouette_samples, silhouette_score
from blender_addon.core.errors import CarprobeError


def blobs(n, d, k, spread, offset=0.0, seed=0, singletons=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    labels = rng.integers(0, k, size=n)
    X = centres[labels] + rng.normal(scale=spread, size=(n, d)) + offset
    labels[:singletons] = k + np.arange(singletons)  # labels of their own
    return X, labels


CASES = [  # n, d, k, spread, offset, singletons, tile/chunk size
    (400, 8, 6, 1.0, 0.0, 3, 64),        # few large clusters: one-hot products
    (300, 4, 120, 1.0, 0.0, 2, 64),      # many small clusters, still one-hot per 64-column tile
    (400, 4, 300, 1.0, 0.0, 2, 256),     # > 128 clusters per tile: running sums
    (600, 16, 30, 0.05, 40.0, 4, 128),   # tight clusters far from the origin
    (500, 3, 2, 3.0, 0.0, 0, None),      # two overlapping clusters, default chunks
]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("case", CASES)
def test_matches_sklearn_samples_and_score(metric, case):
    n, d, k, spread, offset, singletons, chunk = case
    X, labels = blobs(n, d, k, spread, offset, singletons=singletons)
    ours = silhouette_samples(X, labels, metric, chunk_size=chunk)
    theirs = sk_samples(X, labels, metric=metric)
    assert ours.shape == (n,) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert abs(silhouette_score(X, labels, metric, chunk_size=chunk) - sk_score(X, labels, metric=metric)) < 1e-6
    if singletons:
        assert np.all(ours[:singletons] == 0.0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_inputs_torch_float32_strings_and_order(metric):
    X, labels = blobs(200, 5, 4, 0.8, seed=1)
    names = np.array(["red", "blue", "green", "gray"])[labels]
    expected = sk_samples(X.astype(np.float32).astype(np.float64), names, metric=metric)
    got = silhouette_samples(torch.from_numpy(X.astype(np.float32)), list(names), metric, chunk_size=32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    perm = np.random.default_rng(0).permutation(200)  # per-sample values follow the rows
    np.testing.assert_allclose(silhouette_samples(X[perm], names[perm], metric), sk_samples(X, names, metric=metric)[perm],
                               atol=1e-6)


@pytest.mark.parametrize("k, expect_onehot", [(5, True), (400, False)])
def test_block_cluster_sums_equal_per_cluster_slice_sums(k, expect_onehot):
    from analysis.metrics.silhouette import _BlockClusters

    rng = np.random.default_rng(3)
    codes = np.sort(rng.integers(0, k, size=900))
    lo, hi = 100, 700  # a block that starts inside a cluster
    block = _BlockClusters(codes, lo, hi, torch.device("cpu"))
    assert block.onehot is expect_onehot
    tile = torch.rand(37, hi - lo, generator=torch.Generator().manual_seed(0))
    local = codes[lo:hi] - block.c0
    expected = np.zeros((37, block.width))
    for c in np.unique(local):  # the sums the old code took, one slice per cluster
        expected[:, c] = tile[:, local == c].double().sum(dim=1).numpy()
    got = block.sum_columns(tile)
    assert got.dtype == torch.float64 and got.shape == (37, block.width)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(block.sum_rows(tile.T.contiguous()).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("row", [0, 4, 9])  # first chunk, a middle one, the last partial one
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_chunked_finiteness_check_rejects_nan_and_inf_in_any_chunk(monkeypatch, row, value):
    from analysis.metrics import _inputs

    monkeypatch.setattr(_inputs, "_FINITE_CHUNK_ELEMENTS", 12)  # 3 rows of 4 per chunk: 3 + 3 + 3 + 1
    X = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    labels = np.arange(10) % 2
    silhouette_samples(X, labels)  # finite: accepted
    X[row, 3] = value
    X[7, 1] = value  # a second bad row in another chunk: both are counted
    with pytest.raises(CarprobeError, match=r"X: 2 row\(s\) contain NaN or infinity"):
        silhouette_samples(X, labels)


def test_finiteness_check_accepts_finite_rows_whose_sum_overflows():
    """The check's fast path sums each chunk; a sum that overflows to infinity from finite values
    must fall back to the element-wise check, not reject the input."""
    from analysis.metrics._inputs import count_nonfinite_rows

    big = torch.full((6, 4), 3.0e38, dtype=torch.float32)  # finite; any two of them sum to inf
    assert not torch.isfinite(big.sum())
    assert count_nonfinite_rows(big) == 0
    big[2, 1] = float("nan")
    big[4, 0] = -float("inf")
    assert count_nonfinite_rows(big) == 2


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_busy_machine_runs_on_one_thread_and_restores_the_setting(monkeypatch, metric):
    from analysis.metrics import silhouette

    seen = []
    monkeypatch.setattr(silhouette, "_machine_busy", lambda: True)
    monkeypatch.setattr(silhouette, "_combine", lambda *a, _f=silhouette._combine: (seen.append(torch.get_num_threads()),
                                                                                   _f(*a))[1])
    torch.set_num_threads(2)
    X, labels = blobs(300, 6, 5, 1.0, seed=4)
    np.testing.assert_allclose(silhouette_samples(X, labels, metric, chunk_size=64), sk_samples(X, labels, metric=metric),
                               atol=1e-6)
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2


@pytest.mark.parametrize("sampled", [False, True])
def test_euclidean_sweep_threads_agree_bit_for_bit_and_run_single_threaded_kernels(monkeypatch, sampled):
    """The tile sweep and the exact sums split over threads (tile t, cluster c on thread t % workers)
    give the same bits as one thread, whatever the thread count; each thread's kernels run on one
    torch thread, and torch's setting is restored."""
    import threading

    from analysis.metrics import silhouette

    X, labels = blobs(700, 6, 9, 1.0, seed=5, singletons=2)
    rows = np.sort(np.random.default_rng(1).choice(700, size=300, replace=False)) if sampled else None
    codes, _ = silhouette.encode_labels(labels, len(labels))

    def run(workers):
        return silhouette._euclidean_silhouettes(torch.from_numpy(X), codes, int(codes.max()) + 1, torch.device("cpu"),
                                                 64, rows=rows, workers=workers)

    seen = []
    distances = silhouette._tile_distances
    monkeypatch.setattr(silhouette, "_tile_distances",
                        lambda a, b: (seen.append((threading.current_thread().name, torch.get_num_threads())),
                                                distances(a, b))[1])
    torch.set_num_threads(2)
    one = run(1)
    assert {threads for _, threads in seen} == {2}  # one worker: torch's own setting
    seen.clear()
    for workers in (2, 3):
        np.testing.assert_array_equal(run(workers), one)
        assert len({name for name, _ in seen}) == workers and {threads for _, threads in seen} == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
    expected = sk_samples(X, labels, metric="euclidean")
    np.testing.assert_allclose(one, expected if rows is None else expected[rows], atol=1e-6)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_euclidean_tile_sums_equal_brute_force_distance_sums(workers):
    """The float32 sweep that picks candidate clusters: every tile counted once per side."""
    from analysis.metrics import silhouette

    X, labels = blobs(500, 5, 7, 1.0, seed=8)
    codes = np.sort(labels)  # the sweep works on label-sorted rows
    x = np.random.default_rng(0).normal(size=(500, 5))
    brute = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    expected = np.stack([brute[:, codes == c].sum(1) for c in range(7)], axis=1)
    x32 = torch.from_numpy(x.astype(np.float32))
    got = silhouette._tile_cluster_sums_symmetric(x32, codes, 7, 64, workers)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)
    pos = np.array([0, 3, 64, 65, 200, 499])
    got_rows = silhouette._tile_cluster_sums_rows(x32, codes, 7, 64, pos, workers)
    np.testing.assert_allclose(got_rows.numpy(), expected[pos], rtol=1e-4)


def test_euclidean_sweep_error_in_a_thread_is_raised_and_threads_restored(monkeypatch):
    from analysis.metrics import silhouette

    calls = []

    def failing(a, b):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("tile 3")
        return (a @ b.T).clamp_(min=0.0).sqrt_()

    monkeypatch.setattr(silhouette, "_tile_distances", failing)
    torch.set_num_threads(2)
    X, labels = blobs(400, 4, 5, 1.0, seed=6)
    codes, _ = silhouette.encode_labels(labels, 400)
    with pytest.raises(MemoryError, match="tile 3"):
        silhouette._euclidean_silhouettes(torch.from_numpy(X), codes, 5, torch.device("cpu"), 64, rows=None, workers=2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["a thread fails", "the caller is interrupted"])
def test_threads_stop_early_when_one_fails_or_the_caller_is_interrupted(monkeypatch, how):
    """No thread goes on computing for a result nobody will read (an error elsewhere, Ctrl-C)."""
    import threading
    import time

    from analysis.metrics import silhouette

    done = []

    def job(w, stop):
        if w == 0 and how == "a thread fails":
            raise ValueError("tile 0")
        count = 0
        while count < 1000 and not stop.is_set():  # 1 s of work unless told to stop
            time.sleep(0.001)
            count += 1
        done.append(count)

    if how == "the caller is interrupted":
        join = threading.Thread.join

        def interrupted_join(thread, timeout=None):
            if thread.name.startswith("carprobe-silhouette"):
                join(thread, 0.02)
                raise KeyboardInterrupt
            return join(thread, timeout)

        monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    torch.set_num_threads(2)
    with pytest.raises(ValueError if how == "a thread fails" else KeyboardInterrupt):
        silhouette._on_threads(2, job)
    assert torch.get_num_threads() == 2
    deadline = time.monotonic() + 5
    while len(done) < (1 if how == "a thread fails" else 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done and max(done) < 500


@pytest.mark.parametrize("stage", ["_tile_distances", "_exact_sums_to_cluster"])
def test_euclidean_passes_check_the_stop_flag_between_items(monkeypatch, stage):
    import threading
    import time

    from analysis.metrics import silhouette

    others = []
    original = getattr(silhouette, stage)

    def slow_or_failing(*args):
        if threading.current_thread().name.endswith("-0"):
            raise ValueError("first thread fails")
        others.append(1)
        time.sleep(0.005)
        return original(*args)

    monkeypatch.setattr(silhouette, stage, slow_or_failing)
    X, labels = blobs(1300, 4, 60, 1.0, seed=9)  # 231 tiles of 64, 60 clusters
    codes, _ = silhouette.encode_labels(labels, 1300)
    with pytest.raises(ValueError, match="first thread fails"):
        silhouette._euclidean_silhouettes(torch.from_numpy(X), codes, 60, torch.device("cpu"), 64, rows=None,
                                          workers=2)
    assert len(others) < 20  # of the 115 tiles or 30 clusters the other thread had


def test_euclidean_threads_are_fewer_when_their_buffers_would_not_fit(monkeypatch):
    from analysis.metrics import silhouette

    started = []
    on_threads = silhouette._on_threads
    monkeypatch.setattr(silhouette, "_on_threads", lambda workers, job: (started.append(workers),
                                                                          on_threads(workers, job))[1])
    monkeypatch.setattr(silhouette, "_SWEEP_EXTRA_BYTES", 8 * 300 * 5)  # one extra (300 x 5) float64 sums
    X, labels = blobs(300, 4, 5, 1.0, seed=7)
    codes, _ = silhouette.encode_labels(labels, 300)
    got = silhouette._euclidean_silhouettes(torch.from_numpy(X), codes, 5, torch.device("cpu"), 64, rows=None,
                                            workers=4)
    assert started == [2, 1]  # the sweep: 1 + one extra (300 x 5) sums; a distance block is larger
    np.testing.assert_allclose(got, sk_samples(X, labels, metric="euclidean"), atol=1e-6)


def test_cosine_keeps_or_streams_the_normalised_rows_with_the_same_bits_and_leaves_the_input_alone(monkeypatch):
    from analysis.metrics import silhouette

    X, labels = blobs(500, 6, 7, 1.0, seed=10)
    X[3] = 0.0  # a zero row stays zero (no division by its norm)
    t = torch.from_numpy(X.copy())  # float64: the normalisation must not write into it
    kept = silhouette_samples(t, labels, "cosine", chunk_size=64)
    monkeypatch.setattr(silhouette, "_COSINE_KEEP_BYTES", 0)  # stream both passes, as for 1M rows
    streamed = silhouette_samples(t, labels, "cosine", chunk_size=64)
    np.testing.assert_array_equal(kept, streamed)
    np.testing.assert_allclose(kept, sk_samples(X, labels, metric="cosine"), atol=1e-6)
    assert torch.equal(t, torch.from_numpy(X))


def test_duplicate_and_zero_rows_match_sklearn():
    X, labels = blobs(120, 4, 3, 0.5, offset=30.0, seed=2)
    X[5] = X[6]
    labels[5] = labels[6]
    X[7] = 0.0  # cosine: a zero row is at distance 1 from everything, as sklearn's normalize
    for metric in ("cosine", "euclidean"):
        np.testing.assert_allclose(silhouette_samples(X, labels, metric, chunk_size=16),
                                   sk_samples(X, labels, metric=metric), atol=1e-6)


def test_identical_clusters_give_zero_not_nan():
    X = np.ones((6, 3))
    s = silhouette_samples(X, [0, 0, 0, 1, 1, 1], "euclidean")
    np.testing.assert_array_equal(s, sk_samples(X, [0, 0, 0, 1, 1, 1], metric="euclidean"))
    assert np.all(s == 0.0)


def test_well_separated_clusters_score_near_one():
    X, labels = blobs(300, 6, 3, 0.01, seed=3)
    assert silhouette_score(X * 100, labels, "euclidean") > 0.95


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_sampled_estimate_is_exact_per_row_with_a_standard_error(metric):
    X, labels = blobs(500, 6, 5, 1.5, seed=4)
    full = sk_samples(X, labels, metric=metric)
    est = silhouette_estimate(X, labels, metric, sample_size=120, random_state=7)
    rows = np.sort(np.random.default_rng(7).choice(500, size=120, replace=False))
    assert est.n_evaluated == 120 and est.n_samples == 500
    assert abs(est.score - full[rows].mean()) < 1e-9  # each sampled row keeps its exact silhouette
    assert 0 < est.standard_error < 0.2
    assert abs(est.score - full.mean()) < 5 * est.standard_error
    assert silhouette_estimate(X, labels, metric, sample_size=120, random_state=7) == est  # seeded
    exact = silhouette_estimate(X, labels, metric, sample_size=10_000)
    assert exact.standard_error == 0.0 and abs(exact.score - full.mean()) < 1e-6
    assert silhouette_score(X, labels, metric, sample_size=120, random_state=7) == est.score


def test_bad_inputs_say_what_is_expected():
    X, labels = blobs(20, 3, 2, 1.0)
    with pytest.raises(CarprobeError, match="number of labels is 1 .* valid values are 2 to n_samples - 1"):
        silhouette_samples(X, np.zeros(20), "cosine")
    with pytest.raises(CarprobeError, match="number of labels is 20"):
        silhouette_samples(X, np.arange(20), "euclidean")
    with pytest.raises(CarprobeError, match="metric='manhattan' is not supported"):
        silhouette_score(X, labels, "manhattan")
    with pytest.raises(CarprobeError, match="19 entries but the embeddings have 20 rows"):
        silhouette_score(X, labels[:19])
    with pytest.raises(CarprobeError, match="expected a 2-D array"):
        silhouette_score(X[:, 0], labels)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(CarprobeError, match="1 row\\(s\\) contain NaN"):
        silhouette_score(bad, labels)
    with pytest.raises(CarprobeError, match="label\\(s\\) are NaN"):
        silhouette_score(X, np.where(labels == 0, np.nan, 1.0))
    with pytest.raises(CarprobeError, match="sample_size=1 is not allowed"):
        silhouette_estimate(X, labels, sample_size=1)
    with pytest.raises(CarprobeError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise CarprobeError("CUDA is not available (skipped: this machine has CUDA)")
        silhouette_score(X, labels, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_cuda_matches_sklearn(metric):
    X, labels = blobs(700, 12, 9, 1.0, singletons=2)
    np.testing.assert_allclose(silhouette_samples(X, labels, metric, device="cuda"), sk_samples(X, labels, metric=metric),
                               atol=1e-6)
