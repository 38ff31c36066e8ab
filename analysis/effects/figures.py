"""Figures of the effects analysis, drawn from the tidy tables (so `carprobe effects` and the
report show the same pictures): effect-size bars, identity-kept rates, level matrices and
response curves. Every function returns PNG bytes, or None when its table has nothing to draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.report.context import factor_label
from analysis.report.figures import DOUBLE, SEQUENTIAL_CMAP, figure_png, new_figure, text_color_on

from . import INVARIANT_BELOW, LIKE_CAR_ABOVE
from .pairs import CAR_COLUMN

BASELINE_HATCH = "////"  # baselines (ImageNet-only, untrained) are hatched, trained models solid


def model_roles(model_entries: Sequence[Mapping]) -> dict[str, str]:
    """name → 'untrained' / 'ImageNet only' / '' from results.json-style model entries: the
    `imagenet:` and `untrained:` baselines, and a torchvision ref (a backbone nobody trained on
    cars; with random_init it is untrained)."""
    roles = {}
    for entry in model_entries:
        role = str(entry.get("baseline") or "")
        ref = str(entry.get("ref", ""))
        if not role and ref.startswith(("imagenet:", "untrained:")):
            role = "untrained" if ref.startswith("untrained:") else "ImageNet only"
        if not role and ref.startswith("torchvision:"):
            role = "untrained" if entry.get("random_init") else "ImageNet only"
        roles[str(entry.get("name"))] = role
    return roles


def _label(model: str, roles: Mapping[str, str]) -> str:
    role = roles.get(model, "")
    return f"{model} ({role})" if role else model


def _factor_order(frame: pd.DataFrame) -> list[str]:
    return [f for f in pd.unique(frame["factor"]) if f != CAR_COLUMN]


def _bars(frame: pd.DataFrame, metric: str, models: Sequence[str], colors: Mapping[str, str],
          roles: Mapping[str, str], ylabel: str, lines: Sequence[float], ylim=None) -> bytes | None:
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        return None
    factors = _factor_order(rows)
    models = [m for m in models if m in set(rows["model"])]
    fig, ax = new_figure(DOUBLE, 2.6)
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        mine = rows[rows["model"] == model].set_index("factor")
        x = np.arange(len(factors)) + (i - (len(models) - 1) / 2) * width
        value = np.array([mine["value"].get(f, np.nan) for f in factors], dtype=float)
        low = np.array([mine["ci_low"].get(f, np.nan) for f in factors], dtype=float)
        high = np.array([mine["ci_high"].get(f, np.nan) for f in factors], dtype=float)
        baseline = bool(roles.get(model))
        ax.bar(x, value, width * 0.92, color="white" if baseline else colors[model], edgecolor=colors[model],
               hatch=BASELINE_HATCH if baseline else None, linewidth=0.8, label=_label(model, roles))
        err = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
        ax.errorbar(x, value, yerr=np.nan_to_num(err), fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
    for y in lines:  # thresholds, named in the caption
        ax.axhline(y, color="#777777", linewidth=0.6, linestyle="--")
    ax.set_xticks(np.arange(len(factors)))
    ax.set_xticklabels([factor_label(f, unit=False) for f in factors], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure_png(fig)


def effect_bars(effects: pd.DataFrame, models, colors, roles) -> bytes | None:
    return _bars(effects, "effect_ratio", models, colors, roles,
                 "effect ratio (factor change / car change)",
                 [INVARIANT_BELOW, LIKE_CAR_ABOVE])


def identity_kept_bars(effects: pd.DataFrame, models, colors, roles) -> bytes | None:
    return _bars(effects, "identity_kept", models, colors, roles, "identity kept (rate)", [], ylim=(0, 1.05))


def level_matrices(effects: pd.DataFrame, models: Sequence[str]) -> bytes | None:
    """Level × level mean distance of every categorical factor (rows) per model (columns), in
    units of the model's identity yardstick, on one colour scale."""
    rows = effects[effects["metric"] == "mean_distance"]
    if rows.empty:
        return None
    yard = effects[(effects["factor"] == CAR_COLUMN) & (effects["metric"] == "identity_distance")].set_index("model")["value"]
    models = [m for m in models if m in set(rows["model"])]
    factors = list(pd.unique(rows["factor"]))
    mats: dict[tuple[str, str], np.ndarray] = {}
    levels_of: dict[str, list[str]] = {}
    for factor in factors:
        mine = rows[rows["factor"] == factor]
        levels = levels_of[factor] = list(dict.fromkeys(list(mine["level_a"]) + list(mine["level_b"])))
        index = {level: i for i, level in enumerate(levels)}
        for model in models:
            mat = np.full((len(levels), len(levels)), np.nan)
            np.fill_diagonal(mat, 0.0)
            scale = float(yard.get(model, np.nan))
            for _, row in mine[mine["model"] == model].iterrows():
                i, j = index[row["level_a"]], index[row["level_b"]]
                mat[i, j] = mat[j, i] = row["value"] / scale if scale > 0 else np.nan
            mats[factor, model] = mat
    top = max((float(np.nanmax(m)) for m in mats.values() if np.isfinite(m).any()), default=0.0) or 1.0
    largest = max(len(v) for v in levels_of.values())
    width = min(DOUBLE, 1.2 + len(models) * (0.16 * largest + 0.4))
    fig, axes = new_figure(width, sum(0.6 + 0.2 * len(levels_of[f]) for f in factors) + 0.3, len(factors),
                           len(models), squeeze=False,
                           gridspec_kw={"height_ratios": [len(levels_of[f]) for f in factors], "hspace": 0.9,
                                        "wspace": 0.15})
    image = None
    for r, factor in enumerate(factors):
        levels = levels_of[factor]
        for c, model in enumerate(models):
            ax, mat = axes[r][c], mats[factor, model]
            image = ax.imshow(mat, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=top)
            ax.set_xticks(range(len(levels)))
            ax.set_yticks(range(len(levels)))
            ax.set_xticklabels(levels, rotation=90, fontsize=5.5)
            ax.set_yticklabels(levels if c == 0 else [], fontsize=5.5)
            if r == 0:
                ax.set_title(model)
            if c == 0:
                ax.set_ylabel(factor_label(factor, unit=False), fontsize=7)
            if len(levels) <= 4:
                for i in range(len(levels)):
                    for j in range(len(levels)):
                        if np.isfinite(mat[i, j]) and i != j:
                            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=5,
                                    color=text_color_on(image.cmap(image.norm(mat[i, j]))))
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, label="mean distance / identity yardstick")
    return figure_png(fig)


def response_curves(response: pd.DataFrame, models, colors, roles) -> bytes | None:
    """Effect ratio against the size of the change, one panel per numeric factor."""
    if response is None or response.empty:
        return None
    factors = list(pd.unique(response["factor"]))
    cols = min(3, len(factors))
    nrows = -(-len(factors) // cols)
    fig, axes = new_figure(DOUBLE, 2.0 * nrows + 0.3, nrows, cols, squeeze=False)
    for ax, factor in zip(axes.flat, factors):
        mine = response[response["factor"] == factor]
        for model in [m for m in models if m in set(mine["model"])]:
            curve = mine[mine["model"] == model].sort_values("delta")
            baseline = bool(roles.get(model))
            ax.plot(curve["delta"], curve["value"], marker="o", markersize=2.5, linewidth=1.0,
                    linestyle="--" if baseline else "-", color=colors[model], label=_label(model, roles))
            ax.fill_between(curve["delta"], curve["ci_low"], curve["ci_high"], color=colors[model], alpha=0.15,
                            linewidth=0)
        ax.axhline(LIKE_CAR_ABOVE, color="#777777", linewidth=0.6, linestyle="--")
        ax.set_title(factor_label(factor, unit=False))
        ax.set_xlabel(f"Δ {factor_label(factor)}")
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y")
    for ax in list(axes.flat)[len(factors):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("effect ratio")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 1.0))
    return figure_png(fig)


def all_figures(effects: pd.DataFrame, response: pd.DataFrame | None, models: Sequence[str],
                colors: Mapping[str, str], roles: Mapping[str, str]) -> dict[str, bytes]:
    """file name → PNG of every figure there is something to draw for."""
    figures = {"effects_bars.png": effect_bars(effects, models, colors, roles),
               "effects_identity_kept.png": identity_kept_bars(effects, models, colors, roles),
               "effects_response.png": response_curves(response, models, colors, roles)}
    figures["effects_levels.png"] = level_matrices(effects, models)
    return {name: png for name, png in figures.items() if png is not None}
