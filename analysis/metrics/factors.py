"""Per-factor measures over a render set: how strongly embeddings cluster by each factor.

For every model and every factor f (a factor parameter that varies in the set), the embeddings
are labelled by f's value and scored
  - on the one-factor-at-a-time subset of f (metadata rows with `subset` == f: only f varies,
    everything else at its base value in each context): `subset` = f;
  - on the whole set: `subset` = "all".
Measures: the silhouette (cosine by default; `silhouette`) and Kobs et al.'s NR-Prec
(`nr_precision`, Euclidean by default as in the paper), each with a 95% percentile bootstrap
interval over images (`ci_low`, `ci_high`; `bootstrap_mean_ci`).

Binning: only genuinely continuous factors are binned, i.e. those a random design draws from a
`uniform` or `normal` distribution (`continuous_factors` reads them from dataset.json's spec);
they are cut into `bins` quantile bins (`bin_factor`). Listed values (values, range, hsv, choice)
stay classes, one per value, as Kobs et al. used them, however many there are. Without a spec, a
numeric factor counts as continuous only when no value repeats. bins=None never bins. Every row
of the tables records it in `binning`: "none" or "<B> quantile bins". A factor/subset with fewer
than 2 labels, or with every row its own label, is skipped and a note says why.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from blender_addon.core import schema
from blender_addon.core.errors import CarprobeError

from ._inputs import as_embeddings, check_metric
from .bootstrap import bootstrap_mean_ci
from .nrprec import SIGNIFICANT_Z, bin_factor, nr_precision
from .silhouette import silhouette_samples

MEASURES = ("silhouette", "nrprec", "both")
# max_attainable: the largest value these labels allow (NR-Prec: every neighbour relevant), so a
# reader sees when 2.576 is out of reach; NaN for the silhouette.
SCORE_COLUMNS = ["model", "factor", "subset", "metric", "value", "ci_low", "ci_high", "n", "n_labels",
                 "distance", "binned", "binning", "max_attainable"]
PER_VALUE_COLUMNS = ["model", "factor", "subset", "metric", "level", "value", "n", "binning"]
ALL = "all"
DEFAULT_BINS = 8
NOT_BINNED = "none"
CONTINUOUS_FORMS = ("uniform", "normal")


class FactorTables(NamedTuple):
    """`scores`: one row per (model, factor, subset, metric); `per_value`: the mean per-sample
    value (silhouette s(i) or NR-Prec z_i) of the samples at each factor level; `notes`: one line
    per skipped factor/subset."""

    scores: pd.DataFrame
    per_value: pd.DataFrame
    notes: list[str]


def factor_columns(metadata: pd.DataFrame, factors: Iterable[str] | None = None) -> list[str]:
    """Factor parameters that vary in `metadata` (more than one distinct value).

    `factors`: the render set's factor list (dataset.json "factors"), kept in its order; without
    it, every factor parameter of the spec schema present as a column, in schema order.
    """
    if not isinstance(metadata, pd.DataFrame):
        raise CarprobeError(f"metadata: expected a pandas DataFrame, got {type(metadata).__name__}")
    candidates = list(factors) if factors is not None else [p.path for p in schema.PARAMS if p.factor]
    return [c for c in candidates if c in metadata.columns and metadata[c].nunique(dropna=False) > 1]


def continuous_factors(info: Mapping[str, Any] | None) -> set[str]:
    """Factor paths a render set draws from a continuous distribution (uniform or normal), read
    from dataset.json's resolved spec (`info`); empty when there is none."""
    spec = (info or {}).get("spec") or {}
    found = set()
    for p in schema.PARAMS:
        value = (spec.get(p.group) or {}).get(p.name) if p.factor else None
        if isinstance(value, Mapping) and any(form in value for form in CONTINUOUS_FORMS):
            found.add(p.path)
    return found


def check_bins(bins: Any) -> int | None:
    """bins: an integer >= 2, or None / "none" for never binning."""
    if bins is None or (isinstance(bins, str) and bins.strip().lower() == NOT_BINNED):
        return None
    try:
        value = int(bins)
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(bins, bool) or isinstance(bins, float) or value < 2:
        raise CarprobeError(f"bins={bins!r} is not allowed; expected an integer >= 2, or 'none' for no binning")
    return value


def factor_labels(values: pd.Series, bins: int | None = DEFAULT_BINS,
                  continuous: bool | None = None) -> tuple[np.ndarray, str]:
    """(labels, binning): the factor's values as labels, and "none" or "<B> quantile bins".

    continuous: whether the factor is drawn from a continuous distribution (see
    `continuous_factors`); None infers it: numeric and no value repeats. Only a continuous factor
    is binned, into quantile bin labels such as "q2 (0.25, 0.5]"; bins=None never bins.
    """
    bins = check_bins(bins)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if continuous is None:
        continuous = numeric and values.nunique() == len(values) and len(values) > 1
    if bins is not None and continuous and numeric and values.nunique() > 1:
        codes, edges = bin_factor(values.to_numpy(dtype=np.float64), n_bins=bins, return_edges=True)
        names = np.array([f"q{b} ({edges[b]:.4g}, {edges[b + 1]:.4g}]" for b in range(len(edges) - 1)])
        return names[codes], f"{len(edges) - 1} quantile bins"
    if not numeric:
        values = values.astype(object).where(values.notna(), "")  # an empty CSV cell is the value ""
    return values.to_numpy(), NOT_BINNED


def silhouette_by_factor(embeddings: Any, metadata: pd.DataFrame, models: Sequence[str] | None = None,
                         metric: str = "cosine", factors: Iterable[str] | None = None,
                         measure: str = "silhouette", nrprec_metric: str = "euclidean",
                         max_neighbours: int = 1023, bins: int | str | None = DEFAULT_BINS,
                         continuous: Iterable[str] | None = None, device: Any = None) -> FactorTables:
    """Silhouette and/or NR-Prec per factor, model and subset as tidy tables (see module doc).

    embeddings: {model name: (n, d) array}, or one array, or a list of arrays named by `models`;
    rows aligned with `metadata` (a render set's metadata.csv as a DataFrame).
    metric: silhouette distance ("cosine" or "euclidean"); nrprec_metric: NR-Prec distance.
    measure: "silhouette", "nrprec" or "both". factors: as in `factor_columns`.
    bins: quantile bins for continuous factors, or None/"none"; continuous: the factors drawn from
    continuous distributions (`continuous_factors(dataset.json)`); None infers it per factor
    (numeric, no value repeats).
    """
    bins = check_bins(bins)
    continuous = set(continuous) if continuous is not None else None
    if measure not in MEASURES:
        raise CarprobeError(f"measure={measure!r} is not supported; expected one of {', '.join(MEASURES)}")
    check_metric(metric)
    check_metric(nrprec_metric)
    named = _named_embeddings(embeddings, models)
    n = len(metadata)
    for name, X in named.items():
        if X.shape[0] != n:
            raise CarprobeError(f"embeddings of model {name!r}: {X.shape[0]} rows but metadata has {n} rows; "
                                "expected one embedding per metadata row, in the same order")
    cols = factor_columns(metadata, factors)
    subsets = metadata["subset"].fillna("").astype(str).to_numpy() if "subset" in metadata.columns else None
    scores, per_value, notes = [], [], []
    if not cols:
        notes.append("no factor varies in this set: nothing to score")
    for factor in cols:
        labels_all, binning = factor_labels(metadata[factor], bins,
                                            None if continuous is None else factor in continuous)
        masks = []
        if subsets is not None and (subsets == factor).any():
            masks.append((factor, subsets == factor))
        masks.append((ALL, np.ones(n, dtype=bool)))
        for subset, mask in masks:
            labels = labels_all[mask]
            n_labels = len(pd.unique(labels))
            if n_labels < 2:
                notes.append(f"{factor} [{subset}]: skipped, {n_labels} distinct value(s) among {int(mask.sum())} rows")
                continue
            for model, X in named.items():
                Xs = X[mask]
                for kind in (("silhouette", "nrprec") if measure == "both" else (measure,)):
                    try:
                        if kind == "silhouette":
                            per_sample = silhouette_samples(Xs, labels, metric, device=device)
                            value, dist, mname = float(per_sample.mean()), metric, "silhouette"
                            ceiling = float("nan")
                        else:
                            res = nr_precision(Xs, labels, max_neighbours, nrprec_metric, device=device)
                            per_sample, value, dist, mname = res.z, res.mean, nrprec_metric, "nr_precision"
                            ceiling = res.max_mean
                    except CarprobeError as exc:
                        notes.append(f"{factor} [{subset}] {kind} for {model}: skipped, {exc}")
                        continue
                    if ceiling < SIGNIFICANT_Z:
                        notes.append(f"{factor} [{subset}] NR-Prec for {model}: these labels allow at most "
                                     f"{ceiling:.2f} < {SIGNIFICANT_Z}, so it cannot reach significance here "
                                     "(more images per value needed)")
                    low, high = bootstrap_mean_ci(per_sample)
                    scores.append({"model": model, "factor": factor, "subset": subset, "metric": mname,
                                   "value": value, "ci_low": low, "ci_high": high, "n": int(mask.sum()),
                                   "n_labels": n_labels, "distance": dist, "binned": binning != NOT_BINNED,
                                   "binning": binning, "max_attainable": ceiling})
                    frame = pd.DataFrame({"level": labels, "s": per_sample})
                    for level, group in frame.groupby("level", sort=True):
                        per_value.append({"model": model, "factor": factor, "subset": subset, "metric": mname,
                                          "level": level, "value": float(np.nanmean(group["s"]))
                                          if group["s"].notna().any() else float("nan"), "n": len(group),
                                          "binning": binning})
    return FactorTables(pd.DataFrame(scores, columns=SCORE_COLUMNS),
                        pd.DataFrame(per_value, columns=PER_VALUE_COLUMNS), notes)


def _named_embeddings(embeddings: Any, models: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(embeddings, Mapping):
        if models is not None:
            missing = [m for m in models if m not in embeddings]
            if missing:
                raise CarprobeError(f"models: {missing} have no embeddings; available: {list(embeddings)}")
            embeddings = {m: embeddings[m] for m in models}
        items = list(embeddings.items())
    elif isinstance(embeddings, (list, tuple)):
        names = list(models) if models is not None else [f"model{i}" for i in range(len(embeddings))]
        if len(names) != len(embeddings):
            raise CarprobeError(f"models: {len(names)} name(s) for {len(embeddings)} embedding arrays; "
                                "expected one name per array")
        items = list(zip(names, embeddings))
    else:
        names = list(models) if models is not None else ["model"]
        if len(names) != 1:
            raise CarprobeError(f"models: {len(names)} names for one embedding array; expected one name")
        items = [(names[0], embeddings)]
    if not items:
        raise CarprobeError("embeddings: no model given; expected at least one embedding array")
    return {str(name): as_embeddings(X, name=f"embeddings[{name!r}]").cpu().numpy() for name, X in items}
