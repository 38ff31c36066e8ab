"""Saliency for embedding models: explicit targets (targets.py), one attribution verb
(methods.attribute), comparison between models (compare.py), render-mask shares (masks.py),
the cascading-randomisation sanity check (sanity.py), the map store (store.py) and the report
section (report_section.py).

    from analysis.saliency.methods import attribute
    from analysis.saliency.targets import baseline_target
    maps = attribute(model, images, "ig", baseline_target(model, images))

The package itself imports nothing, so `import analysis.saliency` does not load torch.
"""
