"""The HTML report: one self-contained file assembled from a results folder.

``write_report(out_html, set_path, results_dir, title=...)`` reads the tidy tables and arrays
that ``carprobe report`` (and the saliency and training commands) wrote into `results_dir`
(layout: :mod:`analysis.report.context`), runs every function in ``SECTIONS`` in order and
writes one HTML file: CSS inline, figures as base64 PNG, no external URL, so it opens offline.

Section contract
----------------
A section is a function::

    def section(results_dir: pathlib.Path, context: ReportContext) -> str | None

- It reads what it needs from `results_dir` (``context.table("x.csv")`` reads and caches a
  CSV; ``context.manifest`` is results.json; ``context.metadata`` the render set's
  metadata.csv as a DataFrame, or None when the set is not reachable).
- It returns None when its results are absent (the section is then left out), else the HTML
  of ``context.section(section_id, title, *parts)``: exactly one <section> with an <h2>.
- Parts are HTML strings: ``context.figure(fig, caption)`` (a matplotlib figure, closed
  there, or PNG bytes → a numbered, embedded figure), ``context.table_html(frame, caption)``,
  ``context.paragraph(text)``, ``context.measure(text)`` (a box defining the measure).
  Captions and paragraphs are HTML: escape user text with ``analysis.report.html.escape``.
- Figures use the shared style (``analysis.report.figures``: ``new_figure``, ``SINGLE`` /
  ``DOUBLE`` widths) and ``context.color(model)`` so that a model has one colour throughout.
- Nothing may reference the network: ``write_report`` refuses HTML with an external
  src/href/url(), naming the section.
- Errors propagate: a broken section is a bug to fix, not something to hide in the report.

The effects, saliency and training parts plug in by defining ``section`` in
``analysis/effects/report_section.py``, ``analysis/saliency/report_section.py`` and
``analysis/train/report_section.py``; those are
imported when the report is written, if present (``PLUGIN_SECTIONS``).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from blender_addon.core.render_set import atomic_write_text
from blender_addon.core.version import CARPROBE_VERSION

from . import html
from .context import ReportContext, factor_label, load_context, read_manifest
from .sections import (embedding_space_section, nr_precision_section, overview_section,
                       per_value_section, retrieval_section, samples_section, silhouette_section,
                       tables_section, tsne_section)

Section = Callable[[Path, ReportContext], "str | None"]

# Modules defining `section(results_dir, context)`, imported at report time when installed.
PLUGIN_SECTIONS = ("analysis.effects.report_section", "analysis.saliency.report_section",
                   "analysis.train.report_section")
BASELINES_SECTION = "analysis.baselines.report_section"  # right after the overview: the headline


def plugin_section(module_name: str) -> Section:
    """A section that runs `module_name.section` if that module exists, else adds nothing.

    Imported lazily (at report time) so plugin modules may import analysis.report freely.
    """

    def section(results_dir: Path, context: ReportContext) -> str | None:
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:  # the parent package is not there (yet)
            found = False
        if not found:
            return None
        return importlib.import_module(module_name).section(results_dir, context)

    section.__name__ = f"plugin:{module_name}"
    section.__qualname__ = section.__name__
    return section


SECTIONS: list[Section] = [
    overview_section,
    plugin_section(BASELINES_SECTION),
    samples_section,
    silhouette_section,
    per_value_section,
    nr_precision_section,
    embedding_space_section,
    retrieval_section,
    tsne_section,
    *(plugin_section(name) for name in PLUGIN_SECTIONS),
    tables_section,  # last: every number of every table
]


def write_report(out_html: str | Path, set_path: str | Path | None, results_dir: str | Path,
                 title: str | None = None, sections: list[Section] | None = None) -> Path:
    """Write the report for `results_dir` to `out_html` (atomically); returns its path.

    set_path: the render set (for the sample images and factor values); None takes the path
    recorded in results.json, and the image sections are left out if it is not reachable.
    """
    results_dir = Path(results_dir)
    manifest = read_manifest(results_dir)
    set_name = manifest.get("set", {}).get("name", "render set")
    title = title or f"carprobe report: {set_name}"
    context = load_context(results_dir, set_path, title)
    parts = []
    for section in (SECTIONS if sections is None else sections):
        text = section(results_dir, context)
        if not text:
            continue
        name = getattr(section, "__name__", repr(section))
        external = html.external_references(text)
        if external:
            raise RuntimeError(f"report section {name} references the network ({external[0]!r}); "
                               "the report must be self-contained: embed the resource instead")
        if text.count("<h2") != 1 or not text.lstrip().startswith("<section"):
            raise RuntimeError(f"report section {name} must return one <section> with one <h2> "
                               "(build it with context.section(id, title, ...))")
        parts.append(text)
    models = ", ".join(html.escape(m) for m in context.models) or "no models"
    subtitle = (f"Render set <b>{html.escape(set_name)}</b> · {html.escape(str(manifest.get('set', {}).get('images', '?')))}"
                f" images · models: {models}")
    footer = (f"Written by carprobe {html.escape(CARPROBE_VERSION)} on "
              f"{_dt.date.today().isoformat()} from <code>{html.escape(str(results_dir.resolve()))}</code>. "
              "Every number in this report is in the CSV files of that folder.")
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_html, html.page_html(title, subtitle, parts, footer))
    return out_html


__all__ = ["SECTIONS", "PLUGIN_SECTIONS", "ReportContext", "Section", "factor_label", "plugin_section",
           "read_manifest", "write_report"]
