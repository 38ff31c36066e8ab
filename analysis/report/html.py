"""HTML building blocks of the report: escaping, tables, figures, sections and the page.

Everything the page needs is inline (CSS in a <style> element, figures as data: URIs), so the
file opens offline and can be mailed or archived as one file.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .figures import SCREEN_DPI, DPI, figure_png, png_data_uri, png_size

# An external reference anywhere in an attribute (src, href, srcset, poster, …) or CSS url().
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|srcset|poster|data|action|background)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""", re.IGNORECASE)

_SLUG = re.compile(r"[^a-z0-9]+")

CSS = """
:root { --ink: #1b1b1b; --muted: #5f6368; --rule: #1b1b1b; --hair: #d9d9d9; --accent: #0072B2;
        --panel: #f6f7f9; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 "Source Serif Pro", "Georgia", "Times New Roman", serif; }
main { max-width: 1060px; margin: 0 auto; padding: 28px 36px 60px; }
header.report { border-bottom: 2px solid var(--rule); padding-bottom: 12px; margin-bottom: 8px; }
header.report h1 { font: 600 26px/1.25 "Helvetica Neue", Arial, sans-serif; margin: 0 0 4px; }
header.report .subtitle { color: var(--muted); font: 14px/1.4 "Helvetica Neue", Arial, sans-serif; }
nav.toc { font: 13px/1.6 "Helvetica Neue", Arial, sans-serif; margin: 10px 0 18px; color: var(--muted); }
nav.toc ol { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 2px 18px; }
nav.toc a { color: var(--accent); text-decoration: none; }
section.report-section { margin-top: 30px; }
h2 { font: 600 19px/1.3 "Helvetica Neue", Arial, sans-serif; margin: 0 0 8px;
     border-bottom: 1px solid var(--hair); padding-bottom: 4px; }
h2 .num { color: var(--muted); font-weight: 400; margin-right: 6px; }
h3 { font: 600 15px/1.3 "Helvetica Neue", Arial, sans-serif; margin: 18px 0 6px; }
p { margin: 6px 0 10px; max-width: 860px; }
p.note, .measure { color: #333; }
.measure { background: var(--panel); border-left: 3px solid var(--accent); padding: 8px 12px;
           margin: 8px 0 12px; font-size: 14px; max-width: 860px; }
.measure b { font-family: "Helvetica Neue", Arial, sans-serif; }
figure { margin: 14px 0 18px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13.5px; color: #333; margin-top: 6px; max-width: 860px; }
figcaption b, caption b { font-family: "Helvetica Neue", Arial, sans-serif; }
.table-wrap { overflow-x: auto; margin: 10px 0 16px; }
table.data { border-collapse: collapse; font: 12.5px/1.35 "Helvetica Neue", Arial, sans-serif;
             font-variant-numeric: tabular-nums; }
table.data caption { caption-side: top; text-align: left; font: 13.5px/1.4 "Source Serif Pro",
                     Georgia, serif; color: #333; padding-bottom: 6px; max-width: 860px; }
table.data thead th { border-top: 1.5px solid var(--rule); border-bottom: 1px solid var(--rule);
                      font-weight: 600; padding: 4px 10px; text-align: left; vertical-align: bottom; }
table.data tbody td { padding: 3px 10px; border-bottom: 1px solid #f0f0f0; vertical-align: top; }
table.data tbody tr:last-child td { border-bottom: 1.5px solid var(--rule); }
table.data .num { text-align: right; white-space: nowrap; }
table.data th.num { text-align: right; }
table.data td.best { font-weight: 700; }
table.data td.mono, code { font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
table.kv th { text-align: left; font-weight: 600; padding: 3px 14px 3px 0; vertical-align: top;
              border: none; white-space: nowrap; }
table.kv td { padding: 3px 10px 3px 0; border: none; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
          vertical-align: baseline; }
details { margin: 8px 0; }
details summary { cursor: pointer; font: 600 14px/1.5 "Helvetica Neue", Arial, sans-serif; }
footer { margin-top: 40px; border-top: 1px solid var(--hair); padding-top: 8px; color: var(--muted);
         font: 12px/1.5 "Helvetica Neue", Arial, sans-serif; }
@media print { main { max-width: none; padding: 0; } section.report-section { break-inside: avoid-page; }
               nav.toc { display: none; } }
"""


def escape(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def slug(text: str) -> str:
    return _SLUG.sub("-", str(text).lower()).strip("-") or "section"


def format_number(value: Any, digits: int = 3) -> str:
    """How the report writes a number: ints as ints, floats with `digits` decimals, NaN as '–'."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):d}"
    if isinstance(value, (float, np.floating)):
        if math.isinf(float(value)):
            return "∞" if value > 0 else "−∞"
        if not math.isfinite(float(value)):
            return "–"
        return f"{float(value):.{digits}f}"
    return str(value)


def figure_html(fig_or_png, caption: str = "", *, number: int | None = None, alt: str = "",
                width_px: int | None = None) -> str:
    """A <figure> holding a matplotlib figure (closed here) or PNG bytes as a data URI.

    Shown at its paper size (inches × 96 CSS px) unless `width_px` is given; `caption` is HTML.
    """
    png = fig_or_png if isinstance(fig_or_png, (bytes, bytearray)) else figure_png(fig_or_png)
    width, _height = png_size(png)
    shown = width_px if width_px is not None else round(width / DPI * SCREEN_DPI)
    label = f"<b>Figure {number}.</b> " if number is not None else ""
    cap = f"<figcaption>{label}{caption}</figcaption>" if (caption or label) else ""
    return (f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt or _strip_tags(caption))}" '
            f'style="width:{shown}px">{cap}</figure>')


def table_html(frame: pd.DataFrame, caption: str = "", *, number: int | None = None, digits: int | Mapping[str, int] = 3,
               best: Mapping[str, str] | None = None, mono: Iterable[str] = (),
               cell_html: Mapping[str, Callable[[Any], str]] | None = None, index: bool = False) -> str:
    """A clean booktabs-style table of a DataFrame.

    digits: decimals for float columns (one number, or per column). best: column → "max"/"min"
    marks that column's best value in bold. mono: columns in a monospace font. cell_html:
    column → function returning the cell's (already escaped) HTML. `caption` is HTML.
    """
    if index:
        frame = frame.reset_index()
    best = dict(best or {})
    cell_html = dict(cell_html or {})
    mono = set(mono)
    columns = list(frame.columns)
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in columns}
    best_values: dict[str, float] = {}
    for column, how in best.items():
        if column in frame and numeric.get(column):
            values = pd.to_numeric(frame[column], errors="coerce").dropna()
            if len(values):
                best_values[column] = float(values.max() if how == "max" else values.min())
    head = "".join(f'<th class="num">{escape(c)}</th>' if numeric[c] else f"<th>{escape(c)}</th>"
                   for c in columns)
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, record):
            classes = []
            if column in cell_html:
                text = cell_html[column](value)
            elif numeric[column]:
                d = digits.get(column, 3) if isinstance(digits, Mapping) else digits
                text = escape(format_number(value, d))
            else:
                text = escape("–" if value is None or (isinstance(value, float) and math.isnan(value)) else value)
            if numeric[column]:
                classes.append("num")
            if column in mono:
                classes.append("mono")
            if column in best_values and _is_close(value, best_values[column]):
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    label = f"<b>Table {number}.</b> " if number is not None else ""
    cap = f"<caption>{label}{caption}</caption>" if (caption or label) else ""
    return (f'<div class="table-wrap"><table class="data">{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def key_value_html(pairs: Sequence[tuple[str, str]]) -> str:
    """A two-column table of label → value (values are HTML)."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<div class="table-wrap"><table class="kv">{rows}</table></div>'


def section_html(section_id: str, title: str, *parts: str, number: int | None = None) -> str:
    """One report section: <section id=…><h2>title</h2>parts…</section> (parts are HTML)."""
    num = f'<span class="num">{number}</span>' if number is not None else ""
    body = "\n".join(p for p in parts if p)
    return (f'<section class="report-section" id="{escape(slug(section_id))}" data-title="{escape(title)}">\n'
            f"<h2>{num}{escape(title)}</h2>\n{body}\n</section>")


def page_html(title: str, subtitle: str, sections: Sequence[str], footer: str) -> str:
    """The whole document; a table of contents is built from the sections' ids and titles."""
    toc = []
    for text in sections:
        match = re.search(r'<section class="report-section" id="([^"]+)" data-title="([^"]*)"', text)
        if match:
            toc.append(f'<li><a href="#{match.group(1)}">{match.group(2)}</a></li>')
    nav = f'<nav class="toc"><ol>{"".join(toc)}</ol></nav>' if toc else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f'<header class="report"><h1>{escape(title)}</h1><div class="subtitle">{subtitle}</div></header>\n'
            f"{nav}\n" + "\n".join(sections) + f"\n<footer>{footer}</footer>\n</main>\n</body>\n</html>\n")


def external_references(text: str) -> list[str]:
    """Every external (network) reference in an HTML text: must be empty for the report."""
    return [m.group(0) for m in EXTERNAL_REFERENCE.finditer(text)]


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text or "")


def _is_close(value: Any, target: float) -> bool:
    try:
        return math.isclose(float(value), target, rel_tol=1e-12, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False
