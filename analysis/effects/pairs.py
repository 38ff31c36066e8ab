"""Matched pairs from metadata alone: images equal on every factor column but one.

For a factor f, two images form an f-pair when they agree on every other factor column; for
the identity yardstick, two images form an identity pair when they agree on every factor
column that does not define the car and show different cars. Rows are grouped by hashing the
other columns (pandas' hash-based `groupby`), so finding pairs costs O(n + pairs), not n².

Images whose factor values are all equal count once: a one-factor-at-a-time set repeats its
base image in every subset, and those copies differ only in render noise, not in any factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from blender_addon.core import schema
from blender_addon.core.errors import CarprobeError

CAR_COLUMN = "car_id"
# The columns a car identity is made of (blender_addon.core.sampling.car_id): changing one of
# them swaps the car, so these factors are compared with the yardstick but never "kept".
IDENTITY_COLUMNS = ("car.body", "car.shape_seed", "car.model_file")
# Azimuth-like angles wrap around at 360°: 350° and 10° are 20° apart.
# Identity pairs grow with the square of the cars sharing a scene; past 2m + 1 cars each car is
# paired with m others (the yardstick is a median: k·m pairs estimate it as well as k²/2).
MAX_IDENTITY_PARTNERS = 16
PAIR_SEED = 0
CIRCULAR_FACTORS = ("camera.azimuth", "lighting.sun_azimuth", "lighting.hdri_rotation")


@dataclass
class Pairs:
    """Row positions (into the metadata) of matched pairs; `first < second` never matters."""

    first: np.ndarray
    second: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


@dataclass
class PairPlan:
    """Every matched pair of a render set: per factor, and for the identity yardstick."""

    factors: dict[str, Pairs]
    identity: Pairs
    cars: np.ndarray  # car code per metadata row (int), for resampling cars
    car_names: list[str]
    missing: list[str] = field(default_factory=list)  # factors asked for that have no pair

    def cars_in(self, pairs: Pairs) -> int:
        return int(len(np.unique(np.concatenate([self.cars[pairs.first], self.cars[pairs.second]])))) if len(pairs) else 0


def factor_columns(metadata: pd.DataFrame, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The columns that describe an image's scene: every schema factor present, plus `extra`
    (factor columns of metadata not written by carprobe). Derived columns (colour components,
    camera pose, seed, subset) are functions of these and are left out."""
    columns = [p.path for p in schema.PARAMS if p.factor and p.path in metadata.columns]
    return columns + [c for c in extra if c not in columns]


def factor_kind(factor: str, values: pd.Series) -> str:
    """'circular' (azimuth-like angles), 'numeric' (continuous quantities) or 'categorical'."""
    if factor in CIRCULAR_FACTORS:
        return "circular"
    param = schema.PARAMS_BY_PATH.get(factor)
    if param is not None:
        return "numeric" if param.kind == "float" else "categorical"  # ints (shape seeds) are ids
    return "numeric" if pd.api.types.is_float_dtype(values) else "categorical"


def _codes(metadata: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """(n, k) integer codes of the columns; equal values (NaN included) share a code."""
    if not columns:
        return np.zeros((len(metadata), 0), dtype=np.int64)
    return np.stack([pd.factorize(metadata[c], use_na_sentinel=False)[0] for c in columns], axis=1).astype(np.int64)


def _pairs_within_groups(group: np.ndarray, rows: np.ndarray, max_partners: int | None = None) -> Pairs:
    """Every unordered pair of `rows` that share a `group` id (vectorised over groups).

    With `max_partners` m, a group of more than 2m + 1 rows is shuffled (seeded) and each row
    paired with the m rows after it on the cycle: k·m pairs instead of k(k − 1)/2."""
    order = np.argsort(group, kind="stable")
    group, rows = group[order], rows[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    keep = sizes > 1
    starts, sizes = starts[keep], sizes[keep]
    if not len(sizes):
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy())
    firsts, seconds = [], []
    # One pass per group size: sets hold few distinct sizes (levels per factor), many groups each.
    rng = np.random.default_rng(PAIR_SEED)
    for size in np.unique(sizes):
        base = starts[sizes == size][:, None]
        if max_partners is not None and size > 2 * max_partners + 1:
            # a random cycle per group (argsort of uniforms), then steps 1..m along it
            cycle = np.argsort(rng.random((len(base), int(size))), axis=1)
            step = np.arange(1, max_partners + 1)
            a = np.repeat(np.arange(int(size)), max_partners)
            b = (a + np.tile(step, int(size))) % size
            firsts.append(rows[(base + cycle[:, a]).ravel()])
            seconds.append(rows[(base + cycle[:, b]).ravel()])
            continue
        a, b = np.triu_indices(int(size), k=1)
        firsts.append(rows[(base + a[None, :]).ravel()])
        seconds.append(rows[(base + b[None, :]).ravel()])
    return Pairs(np.concatenate(firsts), np.concatenate(seconds))


def _group_ids(codes: np.ndarray) -> np.ndarray:
    """One id per distinct row of `codes` (hash-based)."""
    if codes.shape[1] == 0:
        return np.zeros(len(codes), dtype=np.int64)
    frame = pd.DataFrame(codes)
    return frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()


def find_pairs(metadata: pd.DataFrame, factors: list[str], extra_columns: tuple[str, ...] = (),
               car_column: str = CAR_COLUMN) -> PairPlan:
    """Matched pairs for each factor in `factors` and the identity pairs of the yardstick."""
    if car_column not in metadata.columns:
        raise CarprobeError(f"metadata has no {car_column!r} column: matched pairs compare against a change of "
                            "car, so every row needs its car identity")
    unknown = [f for f in factors if f not in metadata.columns]
    if unknown:
        raise CarprobeError(f"factor(s) {', '.join(map(repr, unknown))}: not metadata columns; available factors: "
                            f"{', '.join(factor_columns(metadata, extra_columns)) or 'none'}")
    columns = factor_columns(metadata, tuple(extra_columns) + tuple(factors))
    # The car column joins the key, so sets that name cars only in car_id still pair within a car.
    codes = _codes(metadata, columns + [car_column])
    car_key = len(columns)
    # Identical scenes count once: keep the first row of each distinct factor combination.
    unique_rows = np.flatnonzero(~pd.DataFrame(codes).duplicated().to_numpy()) if len(columns) else np.arange(len(metadata))
    kept = codes[unique_rows]
    car_codes, car_names = pd.factorize(metadata[car_column].astype(str))
    plan_factors, missing = {}, []
    for factor in factors:
        # An identity factor swaps the car by itself, so its pairs may not share car_id.
        others = [i for i, c in enumerate(columns) if c != factor]
        if factor not in IDENTITY_COLUMNS:
            others.append(car_key)
        pairs = _pairs_within_groups(_group_ids(kept[:, others]), unique_rows)
        plan_factors[factor] = pairs
        if not len(pairs):
            missing.append(factor)
    scene = [i for i, c in enumerate(columns) if c not in IDENTITY_COLUMNS]
    identity = _pairs_within_groups(_group_ids(kept[:, scene]), unique_rows, MAX_IDENTITY_PARTNERS)
    differ = car_codes[identity.first] != car_codes[identity.second]
    identity = Pairs(identity.first[differ], identity.second[differ])
    return PairPlan(factors=plan_factors, identity=identity, cars=np.asarray(car_codes, dtype=np.int64),
                    car_names=[str(c) for c in car_names], missing=missing)


def require_pairs(plan: PairPlan) -> None:
    """CarprobeError when a factor or the identity yardstick has no matched pair."""
    if plan.missing:
        raise CarprobeError(
            f"no matched pairs for factor(s) {', '.join(plan.missing)}: no two images differ in only that factor. "
            "Effects need a controlled design (grid, or one_at_a_time with `across` contexts); choose factors "
            "that have pairs with --factors")
    if not len(plan.identity):
        raise CarprobeError(
            "no identity pairs: no two images show different cars with every other factor equal, so there is no "
            "yardstick. Render at least two car identities per setting (e.g. design.across = ['car.shape_seed'])")
