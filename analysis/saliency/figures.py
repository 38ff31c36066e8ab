"""Saliency figures (PNG bytes), drawn once by `carprobe saliency` and embedded by the report.

Every figure uses one colour scale for all its panels: maps are normalised per map (max or
99th percentile -> 1) before they get here, and drawn with the same vmin/vmax.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from analysis.report.figures import DOUBLE, SINGLE, figure_png, model_colors, new_figure, text_color_on

MAP_CMAP = "inferno"


def short(name: str, width: int = 16) -> str:
    """A model name wrapped onto lines of `width` characters (long refs would overlap)."""
    import textwrap

    return "\n".join(textwrap.wrap(str(name), width, break_long_words=True)[:3])
PART_COLORS = {"background": "#DDDDDD", "body": "#4477AA", "glass": "#66CCEE", "wheels": "#222222",
               "lights": "#CCBB44", "trim": "#AA3377", "ground": "#999933"}


def overlay_grid(images: Sequence[np.ndarray], maps: Mapping[str, np.ndarray], labels: Sequence[str]) -> bytes:
    """Rows = images; columns = image | one map overlay per model; one colour scale (0..vmax)."""
    import matplotlib.pyplot as plt

    names = list(maps)
    rows, cols = len(images), 1 + len(names)
    shown = np.stack([np.abs(maps[n][: rows]) for n in names])
    vmax = float(np.quantile(shown, 0.995)) or 1.0
    width = min(DOUBLE, 1.25 * cols)
    fig, axes = new_figure(width, width / cols * rows + 0.35, rows, cols, squeeze=False)
    for r in range(rows):
        grey = np.asarray(images[r], dtype=np.float32).mean(axis=2) / 255.0
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_ylabel(labels[r], fontsize=6)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(grey, cmap="gray", vmin=0, vmax=1)
            im = axes[r, c].imshow(np.abs(maps[name][r]), cmap=MAP_CMAP, vmin=0, vmax=vmax, alpha=0.65)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=7)
    for c, name in enumerate(names, start=1):
        axes[0, c].set_title(short(name), fontsize=6)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.01, label="attribution (one scale)")
    plt.setp(fig.axes[-1].get_yticklabels(), fontsize=6)
    return figure_png(fig)


def matrix_figure(names: Sequence[str], mats: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """One heatmap per metric: mean (colour, text) with the confidence interval below it."""
    from matplotlib import colormaps

    metrics = list(mats)
    n = len(names)
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    side = max(1.8, 0.45 * n + 1.0)
    fig, axes = new_figure(min(DOUBLE, side * ncols + 0.8), (side + 0.6) * nrows, nrows, ncols, squeeze=False)
    labels = [short(name) for name in names]
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    for k, (ax, metric) in enumerate(zip(axes.ravel(), metrics)):
        mean, lo, hi = mats[metric]
        vmin, vmax = (0.0, float(np.log(2))) if metric == "js_nats" else (min(0.0, float(np.nanmin(mean))), 1.0)
        cmap = colormaps["viridis_r" if metric == "js_nats" else "viridis"]
        ax.imshow(mean, cmap=cmap, vmin=vmin, vmax=vmax)
        for i in range(n):
            for j in range(n):
                if not np.isfinite(mean[i, j]):
                    continue
                text = f"{mean[i, j]:.2f}"
                if i != j and np.isfinite(lo[i, j]):
                    text += f"\n[{lo[i, j]:.2f},{hi[i, j]:.2f}]"
                colour = text_color_on(cmap((mean[i, j] - vmin) / ((vmax - vmin) or 1)))
                ax.text(j, i, text, ha="center", va="center", fontsize=5 if n > 4 else 6, color=colour)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=5)
        ax.set_yticks(range(n), labels if k % ncols == 0 else [""] * n, fontsize=5)
        ax.set_title(metric, fontsize=7)
    return figure_png(fig)


def mask_share_bars(shares, parts: Sequence[str]) -> bytes:
    """Stacked bars of attribution share per part for each model, and the parts' pixel area."""
    models = list(dict.fromkeys(shares["model"]))
    rows = models + ["pixel area"]
    fig, ax = new_figure(SINGLE * 1.4, 0.3 * len(rows) + 0.8)
    for r, model in enumerate(rows):
        left = 0.0
        sub = shares[shares["model"] == (models[0] if model == "pixel area" else model)].set_index("part")
        for part in parts:
            value = float(sub.loc[part, "area" if model == "pixel area" else "share"]) if part in sub.index else 0.0
            ax.barh(r, value, left=left, color=PART_COLORS.get(part, "#888888"), edgecolor="white", linewidth=0.3,
                    label=part if r == 0 else None)
            left += value
    ax.set_yticks(range(len(rows)), [short(r, 24) for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of attribution mass")
    ax.legend(ncol=4, fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return figure_png(fig)


def sanity_curve(table, cumulative: bool = True) -> bytes:
    """Similarity to the original maps vs randomisation step, one line per model; cumulative
    steps are labelled "…layer" (that layer and everything above), independent ones "layer"."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = new_figure(SINGLE * len(metrics) * 0.9, 2.3, 1, len(metrics), squeeze=False)
    models = list(dict.fromkeys(table["model"]))
    colors = model_colors(models)
    for ax, metric in zip(axes[0], metrics):
        for model in models:
            sub = table[(table["model"] == model) & (table["metric"] == metric)].sort_values("step")
            ax.plot(sub["step"], sub["mean"], marker="o", ms=3, color=colors[model], label=model)
            ax.fill_between(sub["step"], sub["ci_low"], sub["ci_high"], color=colors[model], alpha=0.2, lw=0)
        sub = table[(table["model"] == models[0]) & (table["metric"] == metric)].sort_values("step")
        prefix = "…" if cumulative else ""
        ax.set_xticks(sub["step"], ["original"] + [f"{prefix}{layer}" for layer in sub["layer"][1:]], rotation=60,
                      ha="right", fontsize=5)
        ax.set_ylabel(f"{metric} to original")
        ax.axhline(0, color="#999999", lw=0.5)
    axes[0, 0].legend(fontsize=6)
    return figure_png(fig)
