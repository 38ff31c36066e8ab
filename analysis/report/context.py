"""What a report section gets: the results folder's layout and a `ReportContext`.

The results folder (written by `carprobe report`, read by `write_report`)::

    results.json               manifest: the render set (path, name, spec hash, counts, factors),
                               the models (name, ref, fingerprint, dim, distance, preprocessing),
                               the retrieval label and the t-SNE settings
    silhouettes.csv            model, factor, subset, metric, value, ci_low, ci_high, n, n_labels,
                               distance, binned, binning, max_attainable (95% bootstrap over images)
    silhouettes_per_value.csv  model, factor, subset, level, metric, value, n, binning
    nr_precision.csv           as silhouettes.csv; max_attainable = the largest mean z the labels allow
    embedding_metrics.csv      model, factor (the label column), subset, metric, value
    retrieval.csv              model, factor (the label column), subset, metric, value
    spectra.csv                model, rank, value   (normalised singular values, sum 1)
    tsne.csv                   model, index, x, y   (index = the render set's image index)

Other engineers' commands add their own files next to these (saliency, training) and read
them in their own sections. Every table is tidy: one number per row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blender_addon.core import schema
from blender_addon.core.errors import CarprobeError

from . import html as H
from .figures import model_colors

RESULTS_FORMAT = "carprobe-results"
RESULTS_JSON = "results.json"
SILHOUETTES = "silhouettes.csv"
SILHOUETTES_PER_VALUE = "silhouettes_per_value.csv"
NR_PRECISION = "nr_precision.csv"
EMBEDDING_METRICS = "embedding_metrics.csv"
RETRIEVAL = "retrieval.csv"
SPECTRA = "spectra.csv"
TSNE = "tsne.csv"
# Arrays stored as CSV: plotted, but too long (and not informative) for the number tables.
ARRAY_TABLES = (SPECTRA, TSNE)

# Kobs et al.'s threshold: the two-sided p = 0.01 critical z of one image, applied to the mean z
# (analysis.metrics.nrprec.SIGNIFICANT_Z states the convention; a test keeps the two equal).
NR_PREC_SIGNIFICANT = 2.576

_UNITS = {"deg": "°"}
_HSV = {"_h": "hue", "_s": "saturation", "_v": "value", "_r": "red", "_g": "green", "_b": "blue"}
_NAMES = {"car_id": "car identity", "subset": "subset"}


def read_manifest(results_dir: str | Path) -> dict[str, Any]:
    path = Path(results_dir) / RESULTS_JSON
    if not Path(results_dir).is_dir():
        raise CarprobeError(f"results folder {results_dir} does not exist; run `carprobe report SET --models …` first")
    if not path.is_file():
        raise CarprobeError(f"{results_dir} holds no {RESULTS_JSON}: not a carprobe results folder "
                            "(written by `carprobe report SET --models … --out DIR`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CarprobeError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != RESULTS_FORMAT:
        raise CarprobeError(f"{path}: format {manifest.get('format')!r}, expected {RESULTS_FORMAT!r}")
    return manifest


def factor_label(factor: str, unit: bool = True) -> str:
    """A readable name of a factor or label column, with its unit: 'camera azimuth (°)'."""
    factor = str(factor)
    if factor in _NAMES:
        return _NAMES[factor]
    base, suffix = factor, ""
    if factor[-2:] in _HSV and schema.PARAMS_BY_PATH.get(factor[:-2]) is not None:
        base, suffix = factor[:-2], " " + _HSV[factor[-2:]]
    param = schema.PARAMS_BY_PATH.get(base)
    text = base.replace(".", " ").replace("_", " ") + suffix
    if unit and param is not None and param.unit and not suffix:
        text += f" ({_UNITS.get(param.unit, param.unit)})"
    return text


@dataclass
class ReportContext:
    """Everything a section may use, shared by all sections of one report.

    Attributes: results_dir, title, manifest (results.json), set_path and set_info
    (dataset.json; None when the render set is not reachable, e.g. re-rendering elsewhere),
    metadata (metadata.csv as a DataFrame indexed like the set, or None), models (names in
    report order), colors (model → colour, the same in every figure).
    Methods number figures, tables and sections in page order.
    """

    results_dir: Path
    title: str
    manifest: dict[str, Any]
    set_path: Path | None = None
    set_info: dict[str, Any] | None = None
    metadata: pd.DataFrame | None = None
    models: list[str] = field(default_factory=list)
    colors: dict[str, str] = field(default_factory=dict)
    _tables: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)
    _figures: int = 0
    _table_count: int = 0
    _sections: int = 0

    # --- data -----------------------------------------------------------------
    def table(self, name: str) -> pd.DataFrame | None:
        """results_dir/name (CSV) as a DataFrame, None when absent or empty (read once)."""
        if name not in self._tables:
            path = self.results_dir / name
            frame = None
            if path.is_file() and path.stat().st_size > 0:
                frame = pd.read_csv(path, keep_default_na=True)
                for column in ("model", "factor", "subset", "metric", "level"):
                    if column in frame:
                        frame[column] = frame[column].fillna("").astype(str)
                if frame.empty:
                    frame = None
            self._tables[name] = frame
        frame = self._tables[name]
        return None if frame is None else frame.copy()

    def array(self, name: str) -> np.ndarray | None:
        """results_dir/name (.npy or .npz member-less array), None when absent."""
        path = self.results_dir / name
        return np.load(path, allow_pickle=False) if path.is_file() else None

    @property
    def factors(self) -> list[str]:
        """The render set's varying factors (schema order)."""
        info = self.manifest.get("set", {})
        return list(info.get("factors") or (self.set_info or {}).get("factors") or [])

    def order_models(self, names) -> list[str]:
        """`names` in report order (manifest order; unknown names last, sorted)."""
        names = list(dict.fromkeys(str(n) for n in names))
        known = [m for m in self.models if m in names]
        return known + sorted(n for n in names if n not in self.models)

    def color(self, model: str) -> str:
        if model not in self.colors:  # a model only a plugin knows: next free colour
            self.colors.update(model_colors(list(self.colors) + [model]))
        return self.colors[model]

    def factor_label(self, factor: str, unit: bool = True) -> str:
        return factor_label(factor, unit)

    # --- HTML -----------------------------------------------------------------
    def figure(self, fig_or_png, caption: str = "", **kwargs) -> str:
        """A numbered figure (matplotlib figure, closed here, or PNG bytes); caption is HTML."""
        self._figures += 1
        return H.figure_html(fig_or_png, caption, number=self._figures, **kwargs)

    def table_html(self, frame: pd.DataFrame, caption: str = "", **kwargs) -> str:
        """A numbered table (see html.table_html for the keyword arguments)."""
        self._table_count += 1
        return H.table_html(frame, caption, number=self._table_count, **kwargs)

    def section(self, section_id: str, title: str, *parts: str) -> str:
        """The HTML a section function returns: a numbered <section> with an <h2> title."""
        self._sections += 1
        return H.section_html(section_id, title, *parts, number=self._sections)

    def model_html(self, model: str) -> str:
        """A model name with its colour swatch (for tables)."""
        return f'<span class="swatch" style="background:{self.color(model)}"></span>{H.escape(model)}'

    @staticmethod
    def paragraph(text: str, cls: str = "") -> str:
        return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"

    @staticmethod
    def measure(text: str) -> str:
        """A highlighted box that says what a number means (the measure's definition)."""
        return f'<div class="measure">{text}</div>'


def load_context(results_dir: str | Path, set_path: str | Path | None, title: str) -> ReportContext:
    """Read the manifest and, when reachable, the render set (dataset.json + metadata.csv)."""
    results_dir = Path(results_dir)
    manifest = read_manifest(results_dir)
    if set_path is None and manifest.get("set", {}).get("path"):
        set_path = manifest["set"]["path"]
    set_info = metadata = None
    root = Path(set_path) if set_path is not None else None
    if root is not None and (root / "dataset.json").is_file():
        from blender_addon.core.render_set import read_render_set

        render_set = read_render_set(root)
        set_info = render_set.info
        metadata = pd.DataFrame(render_set.rows)
        if not metadata.empty:
            metadata = metadata.set_index("index", drop=False)
    elif root is not None and set_path is not None and manifest.get("set", {}).get("path") != str(set_path):
        raise CarprobeError(f"{root} is not a carprobe render set: no dataset.json")
    models = [m["name"] for m in manifest.get("models", [])]
    return ReportContext(results_dir=results_dir, title=title, manifest=manifest,
                         set_path=root if set_info is not None else None, set_info=set_info,
                         metadata=metadata, models=models, colors=model_colors(models))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
