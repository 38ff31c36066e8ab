"""The effects section of the HTML report (`section(results_dir, context)`).

Reads effects.csv and effects_response.csv from the results folder (written by `carprobe
report`) or from results_dir/effects (`carprobe effects … --out results_dir/effects`), and
draws the figures from them, so `carprobe report --results DIR` re-renders the section.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.report import html as H

from . import (EFFECTS_CSV, INVARIANT_BELOW, LIKE_CAR_ABOVE, RESPONSE_CSV, effects_dir, invariance,
               read_effects)
from .figures import all_figures, model_roles
from .measure import DISTANCE_TEXT, MIN_CARS
from .pairs import CAR_COLUMN

MANIFEST = "effects.json"  # written by `carprobe effects`: the models' refs, distances, roles


def _interval_text(row) -> str:
    if pd.isna(row["ci_low"]):  # fewer than MIN_CARS cars: no bootstrap
        return f"{row['value']:.3f}"
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def section(results_dir, context) -> str | None:
    folder = effects_dir(results_dir)
    if folder is None:
        return None
    effects = read_effects(folder)
    if effects.empty:
        return None
    response_path = folder / RESPONSE_CSV
    response = pd.read_csv(response_path) if response_path.is_file() and response_path.stat().st_size else None
    entries = list(context.manifest.get("models", []))
    if (folder / MANIFEST).is_file():
        entries += json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("models", [])
    roles = model_roles(entries)
    models = context.order_models(effects["model"])
    colors = {m: context.color(m) for m in models}
    distances = {str(e.get("name")): e.get("distance") for e in entries if e.get("distance")}

    yard = effects[(effects["factor"] == CAR_COLUMN) & (effects["metric"] == "identity_distance")]
    cars = effects[effects["metric"] == "cars"].drop_duplicates("factor")
    parts = [context.paragraph(
        "What changing one factor does to an embedding, with every other factor held equal, compared with "
        "changing the car. Matched pairs come from the metadata alone: two images that agree on every factor "
        f"but one. Yardstick: {int(yard['n'].iloc[0]) if len(yard) else 0} identity pairs (two different cars, "
        "everything else equal).")]
    distance_text = "; ".join(f"{H.escape(m)}: {H.escape(DISTANCE_TEXT.get(distances[m], distances[m]))}"
                              for m in models if m in distances)
    parts.append(context.measure(
        "<b>Effect ratio</b> = median distance between the images of a factor's matched pairs / median distance "
        "between images of two different cars with everything else equal, in each model's own distance"
        + (f" ({distance_text})" if distance_text else "") + ". ≈ 0: the model is invariant to the factor; "
        "≥ 1: changing the factor moves the embedding as far as changing the car. Intervals: 95% bootstrap over "
        f"car identities (a car's pairs are not independent; none with fewer than {MIN_CARS} cars). <b>Identity kept</b>: share of pair directions "
        "(x → x′ and x′ → x) in which the changed image is nearer than every image of another car, with a "
        "Wilson 95% interval."))
    if len(cars):
        table = cars[["factor", "n", "value"]].rename(columns={"n": "matched pairs", "value": "car identities"})
        table["factor"] = table["factor"].map(lambda f: "identity yardstick" if f == CAR_COLUMN else context.factor_label(f))
        parts.append(context.table_html(table.reset_index(drop=True), "Matched pairs per factor and the car "
                                        "identities they come from."))
    figures = all_figures(effects, response, models, colors, roles)
    if "effects_bars.png" in figures:
        parts.append(context.figure(figures["effects_bars.png"], "Effect ratio per factor and model with 95% "
                                    "car-bootstrap intervals; hatched bars are baselines (ImageNet-only or untrained "
                                    f"backbones). Dashed lines: {INVARIANT_BELOW:g} (invariant) and "
                                    f"{LIKE_CAR_ABOVE:g} (like a change of car)."))
        ratios = effects[effects["metric"] == "effect_ratio"].copy()
        ratios["text"] = ratios.apply(_interval_text, axis=1)
        wide = ratios.pivot_table(index="factor", columns="model", values="text", aggfunc="first", sort=False)
        wide = wide[[m for m in models if m in wide.columns]].reset_index()
        wide["factor"] = wide["factor"].map(context.factor_label)
        wide.columns.name = None
        parts.append(context.table_html(wide, "Effect ratio [95% interval] per factor (rows) and model (columns)."))
    found = invariance(effects)
    if found:
        items = "".join(
            f"<li><span>{context.model_html(m)}</span>: invariant to <b>{H.escape(', '.join(map(context.factor_label, found[m]['invariant'])) or 'none')}</b>; "
            f"like a change of car: <b>{H.escape(', '.join(map(context.factor_label, found[m]['like_car'])) or 'none')}</b></li>"
            for m in models if m in found)
        parts.append(context.paragraph(
            f"Invariant = whole interval below {INVARIANT_BELOW:g}; like a change of car = whole interval above "
            f"{LIKE_CAR_ABOVE:g} (factors that define the car itself are left out):") + f"<ul>{items}</ul>")
    if "effects_identity_kept.png" in figures:
        parts.append(context.figure(figures["effects_identity_kept.png"], "Identity kept under intervention: would "
                                    "retrieval still find this car after the change? Wilson 95% intervals."))
    if "effects_levels.png" in figures:
        parts.append(context.figure(figures["effects_levels.png"], "Categorical factors: mean distance between each "
                                    "pair of levels, in units of the model's identity yardstick (which levels the "
                                    "model confuses: dark = alike)."))
    if "effects_response.png" in figures:
        parts.append(context.figure(figures["effects_response.png"], "Response curves: effect ratio against the size "
                                    "of the change (azimuths on the circle, so 180° is the largest change: a dip "
                                    "there shows front/back symmetry). Bands: 95% car-bootstrap intervals."))
    parts.append(context.paragraph(f"Every number is in <code>{H.escape(EFFECTS_CSV)}</code> and "
                                   f"<code>{H.escape(RESPONSE_CSV)}</code>."))
    return context.section("effects", "Factor effects: a change of factor against a change of car", *parts)
