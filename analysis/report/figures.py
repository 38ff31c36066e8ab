"""Figure style shared by every report section: one look, one colour per model, paper sizes.

Figures are drawn with matplotlib's Agg backend (no display needed) and embedded in the report
as base64 PNG, so the HTML file stays self-contained. Widths follow a two-column paper layout:
``SINGLE`` (one column) and ``DOUBLE`` (full text width), in inches.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SINGLE = 3.4  # inches, one paper column
DOUBLE = 7.0  # inches, full text width
DPI = 200  # PNG resolution: crisp on screens and in print
SCREEN_DPI = 96  # CSS pixels per inch: figures are shown at their paper size

# Okabe & Ito (2008): distinguishable with every common form of colour-blindness.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# Paul Tol's "muted" scheme continues the model palette past eight models.
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
             "#AA4499", "#DDDDDD")
MODEL_PALETTE = OKABE_ITO + TOL_MUTED
# Factor values (categorical): Tol's "bright" + "muted"; continuous values use cividis.
VALUE_PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB",
                 "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677",
                 "#882255", "#AA4499")
SEQUENTIAL_CMAP = "cividis"  # perceptually uniform and colour-blind safe
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe; centred on 0 by the caller
CONTEXT_GREY = "#D0D0D0"  # points shown for context only (other subsets)

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7.5,
    "figure.titlesize": 9,
    "font.family": "DejaVu Sans",  # bundled with matplotlib: identical output everywhere
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.grid": False,
    "grid.linewidth": 0.4,
    "grid.color": "#E3E3E3",
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "legend.frameon": False,
    "savefig.dpi": DPI,
    "figure.dpi": 100,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}


def model_colors(models: Iterable[str]) -> dict[str, str]:
    """One colour per model, fixed by the model's position in the report's model list."""
    return {name: MODEL_PALETTE[i % len(MODEL_PALETTE)] for i, name in enumerate(models)}


def value_colors(n: int) -> list[str]:
    """n distinct categorical colours (cycled past the palette's length)."""
    return [VALUE_PALETTE[i % len(VALUE_PALETTE)] for i in range(n)]


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """A styled figure with a grid of axes (``plt.subplots`` arguments)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)
    return fig, axes


def styled():
    """Context manager applying the report style (wrap any drawing that creates text)."""
    return plt.rc_context(STYLE)


def figure_png(fig, tight: bool = True) -> bytes:
    """The figure as PNG bytes; closes the figure."""
    buffer = io.BytesIO()
    try:
        with plt.rc_context(STYLE):
            fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None,
                        pad_inches=0.03, facecolor="white", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def symmetric_limit(values: Sequence[float] | np.ndarray, floor: float = 0.05) -> float:
    """Half-range of a diverging colour scale centred on 0 that holds every finite value."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    top = float(np.max(np.abs(finite))) if finite.size else 0.0
    return max(top, floor)


def text_color_on(rgba) -> str:
    """Black or white, whichever reads better on a cell of colour `rgba`."""
    r, g, b = rgba[:3]
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "black" if luminance > 0.5 else "white"
