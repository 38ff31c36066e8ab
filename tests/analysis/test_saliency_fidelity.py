"""Kobs et al.'s saliency recipe against a straight-line rewrite of their explainer, maps that do
not depend on batching, the pointing game's peak, and the independent-layer sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from analysis.saliency import masks, methods, sanity, targets
from tests.analysis.saliency_helpers import TinyEmbedder


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, 12, 14), generator=torch.Generator().manual_seed(seed))


def kobs_explainer_reference(model, x: torch.Tensor, noise: dict, n_samples: int = 50,
                             spread: float = 0.15, percentile: float = 99.0) -> np.ndarray:
    """Kobs et al.'s gradient_explainer, written out for one image at a time: noisy copies
    (std = spread x the image's value range), cosine distance of the L2-normalised embedding to
    the black image's embedding, input gradient, mean over channels, then |.|, summed over the
    copies; min -> 0 and the 99th percentile -> 1, clipped. `noise[(image, sample)]` is the
    standard normal draw of that copy."""
    c, h, w = x.shape[1:]
    base = F.normalize(model(torch.zeros(1, c, h, w)), dim=1).detach()
    out = []
    for i in range(len(x)):
        image = x[i:i + 1]
        eps = torch.stack([noise[(i, s)] for s in range(n_samples)])
        data = (image.repeat(n_samples, 1, 1, 1) + eps * spread * (image.max() - image.min())).detach()
        data.requires_grad_(True)
        embedding = F.normalize(model(data), dim=1)
        loss = (1.0 - (embedding * base).sum(dim=1)).mean()
        loss.backward()
        grads = data.grad.mean(dim=1)
        summed = grads.abs().sum(dim=0).numpy().astype(np.float64)
        low, high = summed.min(), np.percentile(summed, percentile)
        out.append(np.clip((summed - low) / (high - low), 0.0, 1.0))
    return np.stack(out)


@pytest.fixture
def fixed_noise(monkeypatch):
    """Replace carprobe's per-image noise streams with a table the reference reads too."""
    table: dict = {}

    def draw(key, shape):
        if key not in table:
            table[key] = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * key[0] + key[1]))
        return table[key]

    def image_noise(indices, samples, shape, seed, device, dtype, with_alpha=False):
        eps = torch.stack([torch.stack([draw((i, s), shape) for s in samples]) for i in indices])
        return eps.to(device, dtype), torch.full((len(indices), len(samples)), 0.5, device=device, dtype=dtype)

    monkeypatch.setattr(methods, "_image_noise", image_noise)
    return draw


def test_kobs2021_matches_a_straight_line_rewrite_of_their_explainer(fixed_noise):
    model = TinyEmbedder(seed=3).eval()
    x = images()
    ours = methods.attribute(model, x, "kobs2021", targets.baseline_target(model, x))
    table = {(i, s): fixed_noise((i, s), tuple(x.shape[1:])) for i in range(len(x)) for s in range(50)}
    reference = kobs_explainer_reference(model, x, table)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert (reference == 1.0).mean() > 0.005  # the clipped top: the ties the pointing game must avoid


@pytest.mark.parametrize("method", ["kobs2021", "smoothgrad", "gradshap"])
def test_noisy_maps_do_not_depend_on_batching(method):
    model = TinyEmbedder(seed=1).eval()
    x = images(4, seed=2)
    ids = [10, 11, 12, 13]
    opts = {"n_samples": 6}
    together = methods.attribute(model, x, method, targets.baseline_target(model, x), indices=ids, **opts)
    alone = np.concatenate([methods.attribute(model, x[i:i + 1], method, targets.baseline_target(model, x[i:i + 1]),
                                              indices=[ids[i]], **opts) for i in range(4)])
    chunked = methods.attribute(model, x, method, targets.baseline_target(model, x), indices=ids,
                                internal_batch_size=8, **opts)
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(chunked, together, atol=1e-5)
    # the index, not the batch position, fixes the noise
    moved = methods.attribute(model, x[:1], method, targets.baseline_target(model, x[:1]), indices=[11], **opts)
    assert np.abs(moved - together[0]).max() > 1e-3


def test_kobs2021_noise_has_the_stated_spread(monkeypatch):
    # the noisy copies handed to the model: their spread around the image is 0.15 x its value range
    model = TinyEmbedder(seed=0).eval()
    x = images(1)
    seen = []
    score = targets.ExplainedScalar.score

    def record(self, model_, points, anchors=None):
        seen.append(points.detach().clone())
        return score(self, model_, points, anchors)

    monkeypatch.setattr(targets.ExplainedScalar, "score", record)
    methods.attribute(model, x, "kobs2021", targets.baseline_target(model, x), n_samples=50)
    spread = float((seen[0] - x).std())
    assert spread == pytest.approx(0.15 * float(x.max() - x.min()), rel=0.05)


def test_peaks_come_from_the_unnormalised_map():
    model = TinyEmbedder(seed=4).eval()
    x = images(3, seed=5)
    target = targets.baseline_target(model, x)
    maps, peaks = methods.attribute(model, x, "kobs2021", target, return_peaks=True)
    raw = methods.attribute(model, x, "kobs2021", target, normalize="none")
    assert peaks.tolist() == np.abs(raw).reshape(3, -1).argmax(axis=1).tolist()
    assert maps.reshape(3, -1)[np.arange(3), peaks].tolist() == [1.0, 1.0, 1.0]  # a tie after clipping


def test_pointing_game_with_ties_and_peaks():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2] = 1                        # top half: car body
    car = masks.car_ids(masks.part_names())
    tied = np.zeros((4, 4))
    tied[0, 0] = tied[3, 3] = 1.0       # two tied maxima: the first on the car, the last off it
    assert masks.pointing_game(tied, mask, car) == 0.5
    tied[3, 2] = 1.0                    # one on, two off
    assert masks.pointing_game(tied, mask, car) == pytest.approx(1 / 3)
    # the peak of the map before clipping decides, whatever the clipped map says
    assert masks.pointing_game(tied, mask, car, peak=15) == 0.0
    assert masks.pointing_game(tied, mask, car, peak=0) == 1.0
    _, summary, _ = masks.mask_tables({"m": np.stack([tied, tied])}, {"m": np.stack([mask, mask])},
                                      masks.part_names(), [0, 1], peaks={"m": np.array([0, 1])})
    assert summary.set_index("metric").loc["pointing_game", "mean"] == 1.0
    assert masks.rescale_peaks(np.array([5]), (4, 4), (8, 8)).tolist() == [27]  # (1, 1) -> (3, 3)


@pytest.mark.parametrize("cumulative", [True, False])
def test_randomisation_touches_the_right_layers(monkeypatch, cumulative):
    model = TinyEmbedder(seed=0).eval()
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    changed = []

    def record(m, *args, **kwargs):
        state = m.state_dict()
        changed.append(sorted({k.rsplit(".", 1)[0] for k in trained if not torch.equal(state[k], trained[k])}))
        return np.zeros((1, 12, 14), dtype=np.float32)

    monkeypatch.setattr(sanity, "attribute", record)
    check = sanity.cascading_randomization if cumulative else sanity.independent_randomization
    table = check(model, images(1), "saliency", lambda m: targets.norm_target(), metrics=("spearman",))
    steps = [["head"], ["features.2"], ["features.0"]]
    expected = [[]] + ([sorted(sum(steps[:s + 1], [])) for s in range(3)] if cumulative else steps)
    assert changed == expected
    assert list(table["layer"]) == ["none", "head", "features.2", "features.0"]
