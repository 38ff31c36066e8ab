"""Saliency for embedding models: explicit targets, captum attribution, comparison between
models, render-mask shares, the cascading-randomisation sanity check and a map store.

    from analysis.saliency import attribute, baseline_target
    maps = attribute(model, images, "ig", baseline_target(model, images))

Import torch-heavy parts from their modules; this package imports nothing heavy itself.
"""

from __future__ import annotations

__all__ = ["attribute", "baseline_target", "reference_target", "centroid_target", "norm_target",
           "compare_models", "mask_tables", "cascading_randomization", "MapStore", "METHODS", "TARGETS"]


def __getattr__(name: str):
    # Lazy: `import analysis.saliency` stays cheap for the CLI (torch is imported on use).
    from . import compare, masks, methods, sanity, store, targets

    for module in (methods, targets, compare, masks, sanity, store):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(name)
