"""Interventional factor effects: what changing one factor does to an embedding, measured
against changing the car.

    from analysis.effects import find_pairs, compute_effects
    plan = find_pairs(metadata, factors)               # matched pairs from metadata alone
    effects, response = compute_effects({"ms": (X, "cosine", True)}, metadata, plan)

Tables (tidy, one number per row):
- effects.csv: model, factor, level_a, level_b, metric, value, ci_low, ci_high, n.
  Whole-factor rows (level_a/level_b empty): `effect_ratio` (median f-pair distance / identity
  yardstick, 95% car-bootstrap interval), `median_distance`, `identity_kept` (Wilson interval),
  `cars` (car identities in the pairs); n = matched pairs. factor `car_id`: the yardstick
  (`identity_distance`). Categorical factors: `mean_distance` per level pair.
- effects_response.csv: model, factor, delta, metric, value, ci_low, ci_high, n — the effect
  ratio against the size of the change (numeric factors; azimuths circular).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .measure import (DISTANCE_TEXT, EFFECT_COLUMNS, N_BOOTSTRAP, RESPONSE_COLUMNS, SEED, model_effects,
                      wilson)
from .pairs import CAR_COLUMN, IDENTITY_COLUMNS, PairPlan, Pairs, factor_columns, find_pairs, require_pairs

EFFECTS_CSV = "effects.csv"
RESPONSE_CSV = "effects_response.csv"
INVARIANT_BELOW = 0.25  # interval entirely below: the model ignores the factor
LIKE_CAR_ABOVE = 1.0  # interval entirely above: the factor moves it as far as another car does


def compute_effects(models: dict, metadata: pd.DataFrame, plan: PairPlan, n_boot: int = N_BOOTSTRAP,
                    seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effects of every model: `models` maps name → (embeddings, distance, normalize)."""
    effects, response = [], []
    for name, (embeddings, distance, normalize) in models.items():
        e, r = model_effects(name, embeddings, metadata, plan, distance=distance, normalize=normalize,
                             n_boot=n_boot, seed=seed)
        effects.append(e)
        response.append(r)
    return (pd.concat(effects, ignore_index=True) if effects else pd.DataFrame(columns=EFFECT_COLUMNS),
            pd.concat(response, ignore_index=True) if response else pd.DataFrame(columns=RESPONSE_COLUMNS))


def optional_plan(metadata: pd.DataFrame, factors: list[str]) -> tuple[PairPlan | None, list[str]]:
    """For analyses that include effects when the design allows them (`carprobe report`): the
    pairs of the factors that have some, or None when there is no yardstick; plus notes."""
    if CAR_COLUMN not in metadata.columns:
        return None, [f"effects left out: metadata has no {CAR_COLUMN} column"]
    plan = find_pairs(metadata, factors)
    notes = [f"effects: no matched pairs for {', '.join(plan.missing)} (left out)"] if plan.missing else []
    for factor in plan.missing:
        del plan.factors[factor]
    plan.missing = []
    if not len(plan.identity) or not plan.factors:
        return None, notes + ["effects left out: no two images show different cars with everything else equal"
                              if not len(plan.identity) else "effects left out: no factor has matched pairs"]
    return plan, notes


def effects_dir(results_dir: str | Path) -> Path | None:
    """Where effects.csv lives: results_dir itself (`carprobe report`) or results_dir/effects."""
    for candidate in (Path(results_dir), Path(results_dir) / "effects"):
        if (candidate / EFFECTS_CSV).is_file():
            return candidate
    return None


def read_effects(folder: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(Path(folder) / EFFECTS_CSV, dtype={"level_a": str, "level_b": str})
    for column in ("model", "factor", "metric", "level_a", "level_b"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def invariance(effects: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """Per model: factors it is invariant to (whole 95% interval of the effect ratio below
    INVARIANT_BELOW) and factors it treats like a change of car (interval above LIKE_CAR_ABOVE).
    Identity factors (body, shape seed, model file) are a change of car by definition: left out."""
    ratios = effects[(effects["metric"] == "effect_ratio") & ~effects["factor"].isin(IDENTITY_COLUMNS)]
    result: dict[str, dict[str, list[str]]] = {}
    for model, rows in ratios.groupby("model", sort=False):
        result[model] = {"invariant": list(rows.loc[rows["ci_high"] < INVARIANT_BELOW, "factor"]),
                         "like_car": list(rows.loc[rows["ci_low"] > LIKE_CAR_ABOVE, "factor"])}
    return result


def summary_lines(results_dir: str | Path) -> list[str]:
    """Lines for a summary: per model, what it is invariant to and what it treats like another
    car (empty when no effects were measured)."""
    folder = effects_dir(results_dir)
    if folder is None:
        return []
    lines = []
    for model, found in invariance(read_effects(folder)).items():
        invariant = ", ".join(found["invariant"]) or "none"
        like_car = ", ".join(found["like_car"]) or "none"
        lines.append(f"  {model}: invariant to {invariant} (effect interval < {INVARIANT_BELOW:g}); "
                     f"like a change of car: {like_car} (interval > {LIKE_CAR_ABOVE:g})")
    return lines


__all__ = ["CAR_COLUMN", "DISTANCE_TEXT", "EFFECTS_CSV", "EFFECT_COLUMNS", "IDENTITY_COLUMNS", "INVARIANT_BELOW",
           "LIKE_CAR_ABOVE", "PairPlan", "Pairs", "RESPONSE_COLUMNS", "RESPONSE_CSV", "compute_effects",
           "effects_dir", "factor_columns", "find_pairs", "invariance", "model_effects", "optional_plan", "read_effects", "require_pairs",
           "summary_lines", "wilson"]
