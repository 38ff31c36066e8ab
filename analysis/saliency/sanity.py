"""Sanity checks of Adebayo et al. (NeurIPS 2018): cascading and independent randomisation.

Cascading: layers are re-initialised from the top (the embedding head) down to the input,
cumulatively. Independent: one layer (group) at a time is re-initialised while every other
layer keeps its trained weights, which shows each layer's own share of the map. After each step
the maps are recomputed (with the target rebuilt for the randomised model) and compared with the
original maps. A method whose maps barely change while the weights are destroyed shows the
input (edges, contrast), not what the model learned.

Layers are the modules that own parameters, in reverse registration order (torchvision and
carprobe models register modules in forward order); with more than `max_steps` of them,
neighbouring layers are randomised together so the curve has at most `max_steps` points.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .compare import pair_metrics, summarize
from .methods import attribute
from .targets import ExplainedScalar


def randomization_steps(model: nn.Module, max_steps: int = 8) -> list[tuple[str, list[str]]]:
    """[(label, module names)] from the top down; label = the deepest (closest to input) module."""
    units = [name for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]
    units.reverse()
    if not units:
        return []
    groups = np.array_split(np.arange(len(units)), min(max_steps, len(units)))
    return [(units[g[-1]], [units[j] for j in g]) for g in groups if len(g)]


def reinitialize(module: nn.Module) -> None:
    """Fresh weights for one module (its own parameters only; children are separate steps)."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for p in module.parameters(recurse=False):
            nn.init.normal_(p, std=0.02)


def cascading_randomization(model: nn.Module, images: torch.Tensor, method: str,
                            make_target: Callable[[nn.Module], ExplainedScalar], **kwargs):
    """Similarity of maps to the original maps after each cumulative randomisation step.

    Returns a DataFrame: step, layer, metric, mean, ci_low, ci_high, n (step 0 = original,
    layer "none"); `make_target(model)` rebuilds the explained scalar for a model. Keyword
    arguments: max_steps, metrics, seed, ci, indices, progress, and attribute()'s options.
    """
    return _randomization(model, images, method, make_target, cumulative=True, **kwargs)


def independent_randomization(model: nn.Module, images: torch.Tensor, method: str,
                              make_target: Callable[[nn.Module], ExplainedScalar], **kwargs):
    """As `cascading_randomization`, but step s re-initialises only layer group s of a fresh copy
    of the trained model (every other layer trained)."""
    return _randomization(model, images, method, make_target, cumulative=False, **kwargs)


def _randomization(model: nn.Module, images: torch.Tensor, method: str,
                   make_target: Callable[[nn.Module], ExplainedScalar], *, cumulative: bool, max_steps: int = 8,
                   metrics: Iterable[str] = ("spearman", "ssim"), seed: int = 0, ci: float = 0.95,
                   indices: Iterable[int] | None = None, progress: Callable[[], None] | None = None, **opts):
    import pandas as pd

    metrics = list(metrics)
    indices = None if indices is None else list(indices)
    original = attribute(model, images, method, make_target(model), indices=indices, seed=seed, **opts)
    rows = []
    for metric in metrics:
        mean, lo, hi, n = summarize(pair_metrics(original, original, [metric])[metric], metric, ci)
        rows.append({"step": 0, "layer": "none", "metric": metric, "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n": n})
    work = copy.deepcopy(model).eval()
    device = next((p.device for p in work.parameters()), torch.device("cpu"))
    for step, (label, names) in enumerate(randomization_steps(work, max_steps), start=1):
        if not cumulative:
            work = copy.deepcopy(model).eval()
        modules = dict(work.named_modules())
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed + step)
            for name in names:
                reinitialize(modules[name])
        work.eval()
        maps = attribute(work, images, method, make_target(work), indices=indices, seed=seed, **opts)
        values = pair_metrics(original, maps, metrics)
        for metric in metrics:
            mean, lo, hi, n = summarize(values[metric], metric, ci)
            rows.append({"step": step, "layer": label, "metric": metric, "mean": mean, "ci_low": lo,
                         "ci_high": hi, "n": n})
        if progress is not None:
            progress()
    return pd.DataFrame(rows)
