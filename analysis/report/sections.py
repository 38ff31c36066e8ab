"""The report's built-in sections (contract: see analysis.report).

Each function reads the tables named in analysis.report.context and returns one <section>,
or None when its results are absent.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import html as H
from .context import (ARRAY_TABLES, EMBEDDING_METRICS, NR_PREC_SIGNIFICANT, NR_PRECISION, RETRIEVAL,
                      SILHOUETTES, SILHOUETTES_PER_VALUE, SPECTRA, TSNE, ReportContext, is_missing)
from .figures import (CONTEXT_GREY, DIVERGING_CMAP, DOUBLE, SEQUENTIAL_CMAP, new_figure, styled,
                      symmetric_limit, text_color_on, value_colors)

WHOLE_SET = ("all", "")  # `subset` values meaning every image of the set
MAX_SAMPLE_COLUMNS = 8  # images per factor in the sample grid
MAX_LEGEND_LEVELS = 12  # more categorical levels than this: no legend (too long to read)
CONTINUOUS_LEVELS = 10  # numeric factors with more levels are coloured on a continuous scale

BINNING_CONVENTION = (
    "Binning: only factors a random design draws from a continuous (uniform or normal) distribution are cut "
    "into quantile bins (the tables' <i>binning</i> column says how many); listed values are classes, one per "
    "value, as in Kobs et al.")
INTERVAL_CONVENTION = ("Intervals: 95% percentile bootstrap over images (1000 resamples of the per-image "
                       "values).")
NEIGHBOUR_CONVENTION = ("Neighbours are ranked by float64 distance, exact ties by image index, the same in "
                        "every neighbour metric.")
SILHOUETTE_MEASURE = (
    "<b>Property silhouette.</b> For each factor, the images are labelled by that factor's value "
    "and the mean silhouette coefficient of the embeddings is computed with the <i>cosine</i> distance "
    "on L2-normalised embeddings: s = (b − a) / max(a, b), with a the mean distance to images with the "
    "same value and b the mean distance to the nearest other value. It lies in [−1, 1]: "
    "near 1 the embedding clusters by the factor (the model encodes it), near 0 it ignores it, below 0 "
    "images with the same value are farther apart than images with different values. "
    "<i>Controlled</i> = on the factor's one-factor-at-a-time subset (only that factor varies, every other "
    "factor at its base value); <i>whole set</i> = on every image, where the other factors vary too. "
    f"{BINNING_CONVENTION} {INTERVAL_CONVENTION}")
NR_PREC_MEASURE = (
    "<b>NR-Prec (Kobs et al., ICCV 2021).</b> Not a silhouette: a z-score of retrieval against chance. "
    "For each image, R = (number of images with its value) − 1, X = number of same-value images among "
    "its R nearest neighbours (Euclidean distance on the raw, un-normalised embeddings), p = the value's "
    "share of the images whose value occurs at least twice (as Kobs et al.'s code); "
    "z = (X − R·p) / √(R·p·(1 − p)), averaged over images. 0 = chance. "
    f"Threshold: {NR_PREC_SIGNIFICANT} is the two-sided p = 0.01 critical value of one image's z; like Kobs "
    "et al., a factor is marked * when the <i>mean</i> z reaches it, which signals a strong effect but is not "
    "a formal test of the mean. <i>max. z</i> is the largest mean these labels allow (every neighbour "
    "same-value); where it is below the threshold, no embedding could be marked and the row says so. "
    "Unbounded, so not comparable in size with the silhouette; comparable with the numbers Kobs et al. "
    f"published. {BINNING_CONVENTION} {INTERVAL_CONVENTION} {NEIGHBOUR_CONVENTION}")
EMBEDDING_MEASURE = (
    "<b>Embedding-space metrics (Roth et al., ICML 2020)</b>, cosine distance on L2-normalised "
    "embeddings, classes = the label column. π<sub>intra</sub>: mean over classes of the mean distance "
    "between images of the class; π<sub>inter</sub>: mean distance between class centres; "
    "π<sub>ratio</sub> = π<sub>intra</sub> / π<sub>inter</sub> (density; higher = classes less "
    "compressed). Spectral decay ρ = KL(U ‖ S) between the uniform distribution U and the normalised "
    "singular-value spectrum S of the embedding matrix (not mean-centred); lower = flatter spectrum, "
    "more directions used. ρ without σ<sub>1</sub> drops the largest singular value first.")
RETRIEVAL_MEASURE = (
    "<b>Retrieval</b> with the label column as the class, every image a query against all others "
    "(leave-one-out). Recall@k: share of queries with at least one same-class image among the k nearest; "
    "R-Precision: share of same-class images among the R nearest, R = class size − 1; MAP@R: mean "
    "average precision over those R (Musgrave et al., ECCV 2020); NMI: normalised mutual information "
    "between the classes and a k-means clustering of the embeddings (k = number of classes). "
    f"Distance: cosine on L2-normalised embeddings. {NEIGHBOUR_CONVENTION}")

EMBEDDING_NAMES = {
    "pi_intra": "π_intra", "pi_inter": "π_inter", "pi_ratio": "π_ratio (density)",
    "density": "π_ratio (density)", "spectral_decay": "ρ (spectral decay)", "rho": "ρ (spectral decay)",
    "spectral_decay_drop1": "ρ without σ₁", "spectral_decay@2": "ρ without σ₁", "rho@2": "ρ without σ₁",
    "spectral_decay_no_top": "ρ without σ₁", "rho_drop_largest": "ρ without σ₁",
}
RETRIEVAL_NAMES = {"map@r": "MAP@R", "map_at_r": "MAP@R", "mean_average_precision_at_r": "MAP@R",
                   "r_precision": "R-Precision", "r-precision": "R-Precision", "nmi": "NMI",
                   "precision@1": "Precision@1", "precision_at_1": "Precision@1"}
_RECALL = re.compile(r"^recall(?:@|_at_)(\d+)$", re.IGNORECASE)


# --- helpers ---------------------------------------------------------------------------

def _is_numeric_levels(values) -> bool:
    try:
        [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return True


def sorted_levels(values) -> list:
    """Distinct values in a natural order: numeric ascending, else as strings."""
    levels = list(pd.unique(pd.Series(list(values)).dropna()))
    if _is_numeric_levels(levels):
        return sorted(levels, key=float)
    return sorted(levels, key=str)


def format_level(factor: str, value) -> str:
    """A factor value as shown on axes and in tables: '30°', '6500 K', 'red'."""
    from blender_addon.core import schema

    if isinstance(value, (bool, np.bool_)) or not _is_numeric_levels([value]) or isinstance(value, str) and not value.strip():
        return str(value)
    number = float(value)
    text = f"{number:.6g}" if not number.is_integer() else f"{int(number)}"
    param = schema.PARAMS_BY_PATH.get(factor)
    unit = param.unit if param is not None else ""
    if unit == "deg":
        return text + "°"
    return f"{text} {unit}" if unit else text


def _subset_label(factor: str, subset: str) -> str:
    if subset in WHOLE_SET:
        return "whole set"
    if subset == factor:
        return "controlled"
    return f"subset {subset}"


def primary_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (model, factor): the controlled subset's row when there is one, else the whole set's."""
    if frame is None or frame.empty:
        return frame
    own = frame[frame["subset"] == frame["factor"]]
    whole = frame[frame["subset"].isin(WHOLE_SET)]
    have = set(zip(own["model"], own["factor"]))
    rest = whole[[(m, f) not in have for m, f in zip(whole["model"], whole["factor"])]]
    return pd.concat([own, rest], ignore_index=True)


def _factor_order(context: ReportContext, factors) -> list[str]:
    factors = list(dict.fromkeys(str(f) for f in factors))
    known = [f for f in context.factors if f in factors]
    return known + [f for f in factors if f not in known]


def _grouped_bars(ax, context: ReportContext, frame: pd.DataFrame, factors: list[str], models: list[str],
                  value: str = "value") -> None:
    """Bars per factor (x groups), one bar per model; error bars from ci_low/ci_high when given."""
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(factors))
    for i, model in enumerate(models):
        rows = frame[frame["model"] == model].set_index("factor")
        heights = np.array([rows[value].get(f, np.nan) for f in factors], dtype=float)
        offsets = x - 0.4 + width * (i + 0.5)
        yerr = None
        if {"ci_low", "ci_high"} <= set(rows.columns):
            low = np.array([rows["ci_low"].get(f, np.nan) for f in factors], dtype=float)
            high = np.array([rows["ci_high"].get(f, np.nan) for f in factors], dtype=float)
            if np.isfinite(low).any():
                yerr = np.vstack([np.clip(heights - low, 0, None), np.clip(high - heights, 0, None)])
                yerr = np.where(np.isfinite(yerr), yerr, 0.0)
        ax.bar(offsets, np.nan_to_num(heights), width=width * 0.92, color=context.color(model), label=model,
               yerr=yerr, error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"}, zorder=2)
    ax.set_xticks(x)
    ax.set_xticklabels([context.factor_label(f, unit=False) for f in factors],
                       rotation=25 if len(factors) > 3 else 0, ha="right" if len(factors) > 3 else "center")
    ax.axhline(0, color="#333333", linewidth=0.6, zorder=1)
    ax.yaxis.grid(True, zorder=0)
    ax.set_axisbelow(True)


def _model_legend(ax, models: list[str], context: ReportContext, **kwargs) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=context.color(m), label=m) for m in models]
    ax.legend(handles=handles, **{"loc": "upper left", "bbox_to_anchor": (1.0, 1.0), "title": "model", **kwargs})


def _sorted_for_table(context: ReportContext, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in report order: factors as in the set, controlled subset before the whole set, values in order."""
    order = {f: i for i, f in enumerate(_factor_order(context, frame["factor"]))}
    keys = pd.DataFrame({
        "f": frame["factor"].map(order),
        "s": [0 if s == f else (1 if s in WHOLE_SET else 2) for f, s in zip(frame["factor"], frame["subset"])],
    }, index=frame.index)
    if "level" in frame:
        rank = {}
        for factor, rows in frame.groupby("factor"):
            for i, level in enumerate(sorted_levels(rows["level"])):
                rank[(factor, level)] = i
        keys["v"] = [rank.get((f, lv), 0) for f, lv in zip(frame["factor"], frame["level"])]
    return frame.loc[keys.sort_values(list(keys.columns), kind="stable").index]


def _pivot(frame: pd.DataFrame, index: list[str], models: list[str]) -> pd.DataFrame:
    """Models as columns; rows keep the order in which `frame` lists them."""
    table = frame.pivot_table(index=index, columns="model", values="value", aggfunc="first", sort=False)
    table = table.reindex(columns=[m for m in models if m in table.columns]).reset_index()
    table.columns.name = None
    keys = frame[index].drop_duplicates()
    return keys.merge(table, on=index, how="left").reset_index(drop=True)


# --- overview --------------------------------------------------------------------------

def overview_section(results_dir: Path, context: ReportContext) -> str | None:
    """The render set (name, counts, factors and values, spec hash) and the models."""
    manifest = context.manifest
    set_manifest = manifest.get("set", {})
    info = context.set_info or {}
    spec = info.get("spec", {})
    design = spec.get("design", {}) if isinstance(spec, dict) else {}
    counts = info.get("counts") or set_manifest.get("counts") or {}
    spec_hash = info.get("spec_hash") or set_manifest.get("spec_hash", "")
    pairs = [
        ("Render set", H.escape(set_manifest.get("name") or info.get("name", "?"))),
        ("Path", f"<code>{H.escape(set_manifest.get('path', context.set_path or '?'))}</code>"),
    ]
    if spec.get("description"):
        pairs.append(("Description", H.escape(spec["description"])))
    if design:
        kind = design.get("kind", "?")
        extra = f" across {', '.join(map(str, design['across']))}" if design.get("across") else ""
        pairs.append(("Design", H.escape(f"{kind}{extra}, seed {design.get('seed', '?')}")))
    images = counts.get("images", set_manifest.get("images"))
    count_text = f"{images} images"
    if counts.get("samples") is not None and counts.get("samples") != images:
        count_text += f" of {counts['samples']} samples"
    if counts.get("masks"):
        count_text += f", {counts['masks']} part masks"
    pairs.append(("Images", H.escape(count_text)))
    pairs.append(("Spec hash", f"<code>{H.escape(spec_hash)}</code>"))
    versions = [f"carprobe {info['carprobe_version']}" if info.get("carprobe_version") else "",
                f"Blender {info['blender_version']}" if info.get("blender_version") else ""]
    if any(versions):
        pairs.append(("Rendered with", H.escape(", ".join(v for v in versions if v))))
    if manifest.get("label"):
        pairs.append(("Class label (retrieval, density)", H.escape(context.factor_label(manifest["label"]))
                      + f" (<code>{H.escape(manifest['label'])}</code>)"))
    parts = [H.key_value_html(pairs)]

    factor_rows = []
    meta = context.metadata
    for factor in context.factors:
        values = set_manifest.get("factor_values", {}).get(factor)
        subset_n = None
        if meta is not None and factor in meta:
            values = sorted_levels(meta[factor])
            if "subset" in meta:
                subset_n = int((meta["subset"] == factor).sum())
        values = values or []
        shown = ", ".join(format_level(factor, v) for v in values[:12]) + (" …" if len(values) > 12 else "")
        factor_rows.append({"factor": context.factor_label(factor), "column": factor,
                            "values": shown, "levels": len(values),
                            "controlled images": subset_n if subset_n else None})
    if factor_rows:
        frame = pd.DataFrame(factor_rows)
        if frame["controlled images"].isna().all():
            frame = frame.drop(columns="controlled images")
        else:
            frame["controlled images"] = frame["controlled images"].map(lambda v: "–" if pd.isna(v) else str(int(v)))
        parts.append(context.table_html(
            frame, "Factors that vary in the render set, with their values. <i>Controlled images</i>: the "
            "factor's one-factor-at-a-time subset (only that factor varies).", mono=["column"]))

    model_rows = []
    for model in manifest.get("models", []):
        pre = model.get("preprocess") or {}
        model_rows.append({
            "model": model["name"], "source": model.get("ref", ""),
            "fingerprint": str(model.get("fingerprint", ""))[:12],
            "dim": model.get("embedding_dim"), "distance": model.get("distance", ""),
            "L2-norm": "yes" if model.get("normalize") else "no",
            "preprocessing": _preprocess_text(pre),
            "weights": model.get("weights") or ("random init" if model.get("random_init") else "trained"),
        })
    if model_rows:
        frame = pd.DataFrame(model_rows)
        parts.append(context.table_html(
            frame, "Models. <i>Fingerprint</i>: hash of weights and configuration (the embedding-cache key); "
            "<i>distance</i>: the one the model was trained with.",
            mono=["fingerprint", "source"], cell_html={"model": context.model_html}))
    return context.section("overview", "Overview", *parts)


def _preprocess_text(pre: dict) -> str:
    if not pre:
        return ""
    bits = []
    if pre.get("resize"):
        bits.append(f"resize {pre['resize']}")
    if pre.get("crop"):
        bits.append(f"crop {pre['crop']}")
    if pre.get("bgr"):
        bits.append("BGR")
    if pre.get("scale") not in (None, 1, 1.0):
        bits.append(f"×{pre['scale']:g}" if isinstance(pre["scale"], (int, float)) else f"scale {pre['scale']}")

    def _vec(v):
        return "(" + ", ".join(f"{x:.3g}" for x in v) + ")" if isinstance(v, (list, tuple)) else str(v)

    if pre.get("mean") is not None:
        bits.append(f"mean {_vec(pre['mean'])}")
    if pre.get("std") is not None:
        bits.append(f"std {_vec(pre['std'])}")
    return ", ".join(bits)


# --- sample images ---------------------------------------------------------------------

def sample_grid_rows(meta: pd.DataFrame, factors: list[str], max_columns: int = MAX_SAMPLE_COLUMNS
                     ) -> list[tuple[str, list[tuple[object, int]]]]:
    """Per factor: [(value, image index)] showing that factor varying, the others as fixed as the set allows.

    Images come from the factor's controlled subset when it has one; among the images with a
    given value, the one agreeing with a reference image on the most other factors is taken.
    """
    rows_out = []
    for factor in factors:
        if factor not in meta:
            continue
        rows = meta[meta["subset"] == factor] if "subset" in meta and (meta["subset"] == factor).any() else meta
        levels = sorted_levels(rows[factor])
        if len(levels) < 2:
            continue
        if len(levels) > max_columns:
            picks = np.unique(np.linspace(0, len(levels) - 1, max_columns).round().astype(int))
            levels = [levels[i] for i in picks]
        reference = rows.iloc[0]
        others = [f for f in factors if f != factor and f in rows]
        chosen = []
        for level in levels:
            candidates = rows[rows[factor] == level]
            if candidates.empty:
                continue
            agree = np.zeros(len(candidates), dtype=int)
            for other in others:
                agree += (candidates[other].to_numpy() == reference[other])
            chosen.append((level, int(candidates["index"].iloc[int(np.argmax(agree))])))
        rows_out.append((factor, chosen))
    return rows_out


def samples_section(results_dir: Path, context: ReportContext) -> str | None:
    """One row of images per factor: how that factor changes the picture."""
    meta = context.metadata
    if meta is None or context.set_path is None or meta.empty:
        return None
    grid = sample_grid_rows(meta, context.factors)
    if not grid:
        return None
    from PIL import Image

    ncols = max(len(chosen) for _, chosen in grid)
    cell = min(1.0, (DOUBLE - 1.0) / ncols)
    fig, axes = new_figure(1.0 + cell * ncols, (cell + 0.2) * len(grid), len(grid), ncols, squeeze=False,
                           gridspec_kw={"wspace": 0.04, "hspace": 0.32})
    with styled():
        for r, (factor, chosen) in enumerate(grid):
            for c in range(ncols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c >= len(chosen):
                    ax.axis("off")
                    continue
                level, index = chosen[c]
                path = context.set_path / meta.loc[index, "file_name"]
                with Image.open(path) as image:
                    ax.imshow(np.asarray(image.convert("RGB")))
                ax.set_title(format_level(factor, level), fontsize=6.5, pad=2)
                if c == 0:
                    ax.set_ylabel(context.factor_label(factor, unit=False), fontsize=7, rotation=0, ha="right",
                                  va="center", labelpad=4)
    design = (context.set_info or {}).get("spec", {}).get("design", {}).get("kind", "")
    how = ("from the factor's one-factor-at-a-time subset, every other factor at its base value"
           if design == "one_at_a_time" else
           "for each value, the image agreeing with the row's first image on the most other factors"
           + (" (in a random design other factors vary too)" if design == "random" else ""))
    caption = (f"Sample images, one row per factor; columns are that factor's values (at most "
               f"{MAX_SAMPLE_COLUMNS}, evenly spaced), {how}.")
    return context.section("samples", "Sample images", context.figure(fig, caption))


# --- property silhouettes --------------------------------------------------------------

def _silhouette_frame(context: ReportContext) -> pd.DataFrame | None:
    frame = context.table(SILHOUETTES)
    if frame is None:
        return None
    if "metric" in frame:
        frame = frame[frame["metric"].str.lower().str.startswith("silhouette")]
    return frame if not frame.empty else None


def silhouette_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = _silhouette_frame(context)
    if frame is None:
        return None
    models = context.order_models(frame["model"])
    main = primary_rows(frame)
    factors = _factor_order(context, main["factor"])
    controlled = bool((main["subset"] == main["factor"]).any())
    parts = [context.measure(SILHOUETTE_MEASURE)]

    # grouped bars
    width = min(DOUBLE, 1.6 + 0.55 * len(factors) * max(1.0, len(models) / 3))
    fig, ax = new_figure(width, 2.4)
    with styled():
        _grouped_bars(ax, context, main, factors, models)
        ax.set_ylabel("silhouette (cosine)")
        ax.set_xlabel("factor")
        low = min(0.0, float(np.nanmin(main.get("ci_low", main["value"]))), float(main["value"].min()))
        high = max(0.0, float(np.nanmax(main.get("ci_high", main["value"]))), float(main["value"].max()))
        pad = 0.08 * max(high - low, 0.1)
        ax.set_ylim(max(-1.0, low - pad), min(1.0, high + pad))
        _model_legend(ax, models, context)
    has_ci = {"ci_low", "ci_high"} <= set(main.columns) and main["ci_low"].notna().any()
    which = ("on each factor's controlled subset (whole set where a factor has none)" if controlled
             else "on the whole set")
    ci_text = f" Error bars: {H.escape(_ci_text(main))}." if has_ci else ""
    parts.append(context.figure(fig, f"Property silhouettes per factor and model, {which}. "
                                     f"Higher = the embedding clusters more by that factor.{ci_text}"))

    # heatmap factor × model
    matrix = np.array([[main[(main["model"] == m) & (main["factor"] == f)]["value"].mean() for m in models]
                       for f in factors], dtype=float)
    parts.append(context.figure(_heatmap(context, matrix, factors, models, "silhouette (cosine)"),
                                "Factor × model silhouettes (same numbers as the bars). Diverging colours "
                                "centred on 0: red = clusters by the factor, blue = below chance."))

    # table: every subset
    frame = _sorted_for_table(context, frame)
    frame = frame.assign(images=[_subset_label(f, s) for f, s in zip(frame["factor"], frame["subset"])])
    index = ["factor", "images"] + (["n"] if "n" in frame else [])
    table = _pivot(frame.assign(factor=frame["factor"].map(context.factor_label)), index, models)
    parts.append(context.table_html(table, "Property silhouettes (cosine, L2-normalised embeddings); "
                                           "<i>n</i> = images in the subset."))
    return context.section("silhouettes", "Property silhouettes", *parts)


def _ci_text(frame: pd.DataFrame) -> str:
    if "ci_method" in frame and frame["ci_method"].notna().any():
        return str(frame["ci_method"].dropna().iloc[0])
    return "95% confidence interval"


def _heatmap(context: ReportContext, matrix: np.ndarray, factors: list[str], models: list[str], label: str,
             center: float = 0.0, fmt: str = "{:.2f}"):
    limit = symmetric_limit(matrix - center)
    fig, ax = new_figure(1.9 + 0.62 * len(models) + 0.05 * max(len(m) for m in models),
                         0.7 + 0.32 * len(factors))
    with styled():
        image = ax.imshow(matrix, cmap=DIVERGING_CMAP, vmin=center - limit, vmax=center + limit, aspect="auto")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=30 if len(models) > 2 else 0, ha="right" if len(models) > 2 else "center")
        ax.set_yticks(range(len(factors)))
        ax.set_yticklabels([context.factor_label(f, unit=False) for f in factors])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0)
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                        color=text_color_on(image.cmap(image.norm(v))))
        bar = fig.colorbar(image, ax=ax, fraction=0.06, pad=0.03)
        bar.set_label(label)
        bar.outline.set_linewidth(0.4)
        bar.ax.tick_params(labelsize=6.5)
    return fig


# --- per-value breakdown ---------------------------------------------------------------

def per_value_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = context.table(SILHOUETTES_PER_VALUE)
    if frame is None or "level" not in frame:
        return None
    models = context.order_models(frame["model"])
    main = primary_rows(frame)
    factors = _factor_order(context, main["factor"])
    ncols = min(3, len(factors))
    nrows = math.ceil(len(factors) / ncols)
    fig, axes = new_figure(DOUBLE, 1.85 * nrows, nrows, ncols, squeeze=False)
    with styled():
        for k, factor in enumerate(factors):
            ax = axes[k // ncols][k % ncols]
            rows = main[main["factor"] == factor]
            levels = sorted_levels(rows["level"])
            width = 0.8 / len(models)
            x = np.arange(len(levels))
            for i, model in enumerate(models):
                values = rows[rows["model"] == model].set_index("level")["value"]
                heights = np.array([values.get(lv, np.nan) for lv in levels], dtype=float)
                ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(heights), width=width * 0.92,
                       color=context.color(model), zorder=2)
            labels = [format_level(factor, lv) for lv in levels]
            ax.set_xticks(x)
            rotate = sum(len(t) for t in labels) > 28
            ax.set_xticklabels(labels, rotation=40 if rotate else 0, ha="right" if rotate else "center")
            ax.axhline(0, color="#333333", linewidth=0.6, zorder=1)
            ax.yaxis.grid(True, zorder=0)
            ax.set_axisbelow(True)
            ax.set_title(context.factor_label(factor), loc="left")
            if k % ncols == 0:
                ax.set_ylabel("mean silhouette")
        for k in range(len(factors), nrows * ncols):
            axes[k // ncols][k % ncols].axis("off")
        if len(factors) < nrows * ncols:  # a free panel: the legend goes there
            _model_legend(axes[nrows - 1][ncols - 1], models, context, loc="center left", bbox_to_anchor=(0.05, 0.5))
        else:
            _model_legend(axes[0][ncols - 1], models, context)
        fig.tight_layout(w_pad=1.2, h_pad=1.0)
    parts = [
        context.paragraph("Which values of a factor the embedding separates: the mean silhouette of the images "
                          "with each value (same subsets and distance as above). A value whose images sit "
                          "apart from the others scores high; values the model confuses score low."),
        context.figure(fig, "Silhouette per factor value and model."),
    ]
    main = _sorted_for_table(context, main)
    table = main.assign(factor=main["factor"].map(context.factor_label),
                        value_label=[format_level(f, lv) for f, lv in zip(main["factor"], main["level"])])
    table = table.rename(columns={"value_label": "factor value"})
    index = ["factor", "factor value"] + (["n"] if "n" in table else [])
    parts.append(context.table_html(_pivot(table, index, models),
                                    "Mean silhouette of the images with each value; <i>n</i> = images with that value."))
    return context.section("per-value", "Per-value breakdown", *parts)


# --- NR-Prec ---------------------------------------------------------------------------

def nr_precision_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = context.table(NR_PRECISION)
    if frame is None:
        return None
    models = context.order_models(frame["model"])
    main = primary_rows(frame)
    factors = _factor_order(context, main["factor"])
    width = min(DOUBLE, 1.6 + 0.55 * len(factors) * max(1.0, len(models) / 3))
    fig, ax = new_figure(width, 2.4)
    with styled():
        _grouped_bars(ax, context, main, factors, models)
        ax.axhline(NR_PREC_SIGNIFICANT, color="#333333", linestyle=(0, (4, 2)), linewidth=0.8, zorder=3)
        ax.text(0.005, NR_PREC_SIGNIFICANT, "p = 0.01", transform=ax.get_yaxis_transform(), va="bottom",
                ha="left", fontsize=6.5, color="#333333")
        ax.set_ylabel("NR-Prec (z-score)")
        ax.set_xlabel("factor")
        top = max(float(main["value"].max()), NR_PREC_SIGNIFICANT)
        bottom = min(0.0, float(main["value"].min()))
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.08 * (top - bottom))
        _model_legend(ax, models, context)
    parts = [context.measure(NR_PREC_MEASURE),
             context.figure(fig, "NR-Prec per factor and model; dashed: the threshold z = "
                                 f"{NR_PREC_SIGNIFICANT} (two-sided p = 0.01 for one image's z, applied to "
                                 "the mean as Kobs et al.).")]
    frame = _sorted_for_table(context, frame)
    frame = frame.assign(images=[_subset_label(f, s) for f, s in zip(frame["factor"], frame["subset"])])
    index = ["factor", "images"] + (["n"] if "n" in frame else [])
    reach = "max_attainable" in frame and frame["max_attainable"].notna().any()
    if reach:  # the same for every model: it depends on the labels only
        frame = frame.assign(**{"max. z": [H.format_number(float(v), 2) + ("" if v >= NR_PREC_SIGNIFICANT
                                                                         else " (cannot reach)")
                                           for v in frame["max_attainable"]]})
        index.append("max. z")
    table = _pivot(frame.assign(factor=frame["factor"].map(context.factor_label)), index, models)

    def mark(value):
        if is_missing(value):
            return "–"
        star = "*" if float(value) >= NR_PREC_SIGNIFICANT else ""
        return H.escape(H.format_number(float(value), 3)) + star

    caption = (f"NR-Prec (mean z-score); * mean z ≥ {NR_PREC_SIGNIFICANT}, the two-sided p = 0.01 per-image "
               "threshold applied to the mean, as Kobs et al.")
    if reach:
        caption += ("; <i>max. z</i>: the largest mean these labels allow, “cannot reach” where it is "
                    "below the threshold (too few images per value)")
    parts.append(context.table_html(table, caption + ".", cell_html={m: mark for m in models}))
    return context.section("nr-prec", "NR-Prec (Kobs et al.)", *parts)


# --- embedding-space metrics -----------------------------------------------------------

def embedding_space_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = context.table(EMBEDDING_METRICS)
    spectra = context.table(SPECTRA)
    if frame is None and spectra is None:
        return None
    parts = [context.measure(EMBEDDING_MEASURE)]
    if spectra is not None:
        models = context.order_models(spectra["model"])
        fig, axes = new_figure(DOUBLE, 2.3, 1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
        with styled():
            ax, ax_cum = axes
            for model in models:
                rows = spectra[spectra["model"] == model].sort_values("rank")
                ax.plot(rows["rank"], rows["value"], color=context.color(model), linewidth=1.1, label=model)
                ax_cum.plot(rows["rank"], np.cumsum(rows["value"]), color=context.color(model), linewidth=1.1)
            ranks = spectra["rank"].max()
            ax.axhline(1.0 / ranks, color="#777777", linestyle=(0, (3, 2)), linewidth=0.7)
            ax.text(ranks, 1.0 / ranks, "uniform", ha="right", va="bottom", fontsize=6.5, color="#555555")
            ax.set_yscale("log")
            ax.set_xlabel("singular value rank")
            ax.set_ylabel("normalised singular value σᵢ / Σσ")
            ax.set_title("spectrum", loc="left")
            ax.yaxis.grid(True, which="major")
            ax_cum.set_xlabel("singular value rank")
            ax_cum.set_ylabel("cumulative share")
            ax_cum.set_ylim(0, 1.02)
            ax_cum.set_title("cumulative", loc="left")
            ax_cum.yaxis.grid(True)
            _model_legend(ax_cum, models, context)
            fig.tight_layout(w_pad=2.0)
        parts.append(context.figure(fig, "Normalised singular-value spectrum of each model's embeddings (log scale) "
                                         "and its cumulative share. A flatter spectrum (lower ρ) uses more "
                                         "directions of the embedding space."))
    if frame is not None:
        models = context.order_models(frame["model"])
        frame = frame.assign(metric=frame["metric"].map(lambda m: EMBEDDING_NAMES.get(m, m)))
        label = frame["factor"].iloc[0] if "factor" in frame else context.manifest.get("label", "")
        table = frame.pivot_table(index="model", columns="metric", values="value", aggfunc="first", sort=False)
        table = table.reindex([m for m in models if m in table.index]).reset_index()
        table.columns.name = None
        parts.append(context.table_html(table, f"Embedding-space metrics, classes = {H.escape(context.factor_label(label))}.",
                                        cell_html={"model": context.model_html}, digits=4))
    return context.section("embedding-space", "Embedding-space metrics", *parts)


# --- retrieval -------------------------------------------------------------------------

def _retrieval_name(metric: str) -> str:
    match = _RECALL.match(metric)
    if match:
        return f"Recall@{match.group(1)}"
    return RETRIEVAL_NAMES.get(metric.lower(), metric)


def retrieval_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = context.table(RETRIEVAL)
    if frame is None:
        return None
    models = context.order_models(frame["model"])
    label = frame["factor"].iloc[0] if "factor" in frame else context.manifest.get("label", "")
    recall = frame[frame["metric"].str.match(_RECALL)].copy()
    recall["k"] = recall["metric"].str.extract(_RECALL, expand=False).astype(int)
    other = frame[~frame["metric"].str.match(_RECALL)].copy()
    other["name"] = other["metric"].map(_retrieval_name)
    parts = [context.measure(RETRIEVAL_MEASURE)]
    panels = int(not recall.empty) + int(not other.empty)
    fig, axes = new_figure(DOUBLE if panels == 2 else 3.6, 2.3, 1, panels, squeeze=False)
    axes = list(axes[0])
    with styled():
        if not recall.empty:
            ax = axes.pop(0)
            for model in models:
                rows = recall[recall["model"] == model].sort_values("k")
                ax.plot(rows["k"], rows["value"], marker="o", markersize=3, linewidth=1.1, color=context.color(model))
            ks = sorted(recall["k"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks)
            ax.set_xticklabels([str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k (neighbours)")
            ax.set_ylabel("Recall@k")
            ax.set_ylim(0, 1.02)
            ax.yaxis.grid(True)
            ax.set_title("Recall@k", loc="left")
        if not other.empty:
            ax = axes.pop(0)
            names = list(dict.fromkeys(other["name"]))
            width = 0.8 / len(models)
            for i, model in enumerate(models):
                values = other[other["model"] == model].set_index("name")["value"]
                ax.bar(np.arange(len(names)) - 0.4 + width * (i + 0.5),
                       [float(values.get(n, np.nan)) for n in names], width=width * 0.92,
                       color=context.color(model), zorder=2)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("score")
            ax.yaxis.grid(True, zorder=0)
            ax.set_axisbelow(True)
            ax.set_title("ranking and clustering", loc="left")
        _model_legend(fig.axes[-1], models, context)
        fig.tight_layout(w_pad=2.0)
    parts.append(context.figure(fig, f"Retrieval with classes = {H.escape(context.factor_label(label))}: "
                                     "Recall@k against k, and MAP@R, R-Precision and NMI (all in [0, 1], higher is better)."))
    order = sorted(recall["metric"].unique(), key=lambda m: int(_RECALL.match(m).group(1))) + list(dict.fromkeys(other["metric"]))
    table = frame.assign(metric=pd.Categorical(frame["metric"], categories=order, ordered=True))
    table = table.pivot_table(index="model", columns="metric", values="value", aggfunc="first", observed=True)
    table = table.reindex([m for m in models if m in table.index])
    table.columns = [_retrieval_name(str(c)) for c in table.columns]
    table = table.reset_index()
    best = {c: "max" for c in table.columns if c != "model"}
    parts.append(context.table_html(table, f"Retrieval metrics, classes = {H.escape(context.factor_label(label))}; "
                                           "best per column in bold.", cell_html={"model": context.model_html}, best=best))
    return context.section("retrieval", "Retrieval", *parts)


# --- t-SNE -----------------------------------------------------------------------------

def tsne_section(results_dir: Path, context: ReportContext) -> str | None:
    frame = context.table(TSNE)
    meta = context.metadata
    if frame is None or meta is None:
        return None
    models = context.order_models(frame["model"])
    factors = [f for f in context.factors if f in meta]
    if not factors:
        return None
    settings = context.manifest.get("tsne", {})
    panel = min(1.55, (DOUBLE - 1.6) / len(models))
    fig, axes = new_figure(panel * len(models) + 1.7, panel * len(factors), len(factors), len(models),
                           squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.08})
    with styled():
        for r, factor in enumerate(factors):
            in_subset = (meta["subset"] == factor) if "subset" in meta and (meta["subset"] == factor).any() else None
            levels = sorted_levels(meta[factor] if in_subset is None else meta.loc[in_subset, factor])
            continuous = _is_numeric_levels(levels) and len(levels) > CONTINUOUS_LEVELS
            colors = dict(zip(levels, value_colors(len(levels))))
            for c, model in enumerate(models):
                ax = axes[r][c]
                points = frame[frame["model"] == model]
                rows = meta.loc[points["index"].to_numpy()]
                xy = points[["x", "y"]].to_numpy(dtype=float)
                size = max(1.5, min(9.0, 1500.0 / max(len(points), 1)))
                mask = np.ones(len(points), bool) if in_subset is None else rows["subset"].to_numpy() == factor
                ax.scatter(xy[~mask, 0], xy[~mask, 1], s=size * 0.6, c=CONTEXT_GREY, linewidths=0, rasterized=True)
                values = rows[factor].to_numpy()[mask]
                if continuous:
                    scatter = ax.scatter(xy[mask, 0], xy[mask, 1], s=size, c=values.astype(float),
                                         cmap=SEQUENTIAL_CMAP, linewidths=0, rasterized=True)
                else:
                    ax.scatter(xy[mask, 0], xy[mask, 1], s=size, c=[colors[v] for v in values], linewidths=0.2,
                               edgecolors="white", rasterized=True)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_linewidth(0.4)
                    spine.set_color("#999999")
                if r == 0:
                    ax.set_title(model, color="black", fontsize=8)
                    ax.plot([0.0, 1.0], [1.0, 1.0], transform=ax.transAxes, color=context.color(model),
                            linewidth=2.5, solid_capstyle="butt", clip_on=False)
                if c == 0:
                    ax.set_ylabel(context.factor_label(factor, unit=False), fontsize=7.5)
            last = axes[r][len(models) - 1]
            if continuous:
                bar = fig.colorbar(scatter, ax=list(axes[r]), fraction=0.04, pad=0.02, aspect=12)
                bar.ax.tick_params(labelsize=6)
                bar.outline.set_linewidth(0.4)
                bar.set_label(context.factor_label(factor), fontsize=6.5)
            elif len(levels) <= MAX_LEGEND_LEVELS:
                from matplotlib.lines import Line2D

                handles = [Line2D([], [], marker="o", linestyle="", markersize=4, markerfacecolor=colors[v],
                                  markeredgewidth=0, label=format_level(factor, v)) for v in levels]
                last.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=6,
                            handletextpad=0.2, labelspacing=0.25, borderaxespad=0.0,
                            ncol=1 if len(levels) <= 6 else 2, columnspacing=0.6)
            else:
                last.text(1.04, 0.5, f"{len(levels)} values\n(no legend)", transform=last.transAxes, fontsize=6,
                          va="center", color="#555555")
    n = int(frame.groupby("model").size().max())
    total = int(settings.get("total", len(meta)))
    sampled = f"a random subsample of n = {n} of {total} images" if n < total else f"all n = {n} images"
    perplexity = settings.get("perplexity")
    seed = settings.get("seed")
    details = ", ".join(x for x in (f"perplexity {perplexity:g}" if perplexity else "",
                                     f"seed {seed}" if seed is not None else "",
                                     settings.get("metric", "") and f"{settings['metric']} distance") if x)
    grey = (" Grey: images outside the factor's controlled subset (shown for context)."
            if "subset" in meta and meta["subset"].isin(factors).any() else "")
    caption = (f"2-D t-SNE of each model's embeddings ({sampled}; {H.escape(details)}); one column per model, "
               f"one row per factor, points coloured by the factor's value.{grey} t-SNE keeps neighbourhoods, "
               "not distances: compare which factors form clusters, not the axes.")
    return context.section("tsne", "t-SNE projections", context.figure(fig, caption))


# --- every number ----------------------------------------------------------------------

MAX_TABLE_ROWS = 2000


def tables_section(results_dir: Path, context: ReportContext) -> str | None:
    """Every tidy table of the results folder, in full (long arrays are left to their files)."""
    names = sorted(p.name for p in Path(results_dir).glob("*.csv") if p.name not in ARRAY_TABLES)
    if not names:
        return None
    blocks = []
    for name in names:
        frame = context.table(name)
        if frame is None:
            continue
        shown = frame.head(MAX_TABLE_ROWS)
        more = (f" First {MAX_TABLE_ROWS} of {len(frame)} rows; every row is in the file."
                if len(frame) > MAX_TABLE_ROWS else f" {len(frame)} rows.")
        table = context.table_html(shown, f"<code>{H.escape(name)}</code>.{more}", digits=4)
        blocks.append(f"<details><summary>{H.escape(name)} ({len(frame)} rows)</summary>{table}</details>")
    if not blocks:
        return None
    intro = context.paragraph("Every number of the report, as stored in the results folder (tidy: one number per "
                              "row). Click a file to open its table.")
    return context.section("tables", "All numbers", intro, *blocks)
