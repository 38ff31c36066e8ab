"""Glue between the sidebar properties and the core: the spec the GUI shows, and previewing a sample.

Sampling and scene building are not done here: the spec is parsed by ``core.spec.parse_spec``,
sample i is ``core.sampling.sample_row(spec, i)`` and ``blender.scene.apply_row`` builds it,
exactly as a headless render would.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy

from ..core import schema
from ..core.errors import CarprobeError
from .fields import props_to_spec

# Row keys the Preview panel lists before the factor values.
ROW_SUMMARY_KEYS = ("index", "car_id", "subset", "seed")


def source_dir(props) -> Path:
    """Folder that relative paths in the spec resolve against: the spec file's, else the .blend's."""
    if props.spec_path:
        return Path(bpy.path.abspath(props.spec_path)).parent
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent
    return Path.cwd()


def current_spec(context):
    """The Spec the sidebar shows, parsed and validated like a TOML file (SpecError otherwise)."""
    from ..core.spec import parse_spec

    props = context.scene.carprobe
    return parse_spec(props_to_spec(props), source_dir(props))


def output_dir(context) -> Path:
    props = context.scene.carprobe
    if not props.output_dir.strip():
        raise CarprobeError("output folder: empty; choose a folder for the render set in the Dataset panel")
    return Path(bpy.path.abspath(props.output_dir))


def preview_sample(context, index: int, spec=None) -> dict:
    """Make the viewport scene show sample ``index``; returns its metadata row.

    The row (or the error) is kept in ``window_manager.carprobe_state`` for the Preview panel;
    CarprobeError is raised again for operators to report.
    """
    from ..blender.scene import apply_row
    from ..core.sampling import sample_count, sample_row

    state = context.window_manager.carprobe_state
    try:
        spec = current_spec(context) if spec is None else spec
        count = sample_count(spec)
        state.sample_count = count
        if not 0 <= index < count:
            raise CarprobeError(f"sample index {index}: out of range, the spec has {count} samples "
                                f"(0..{count - 1})")
        row = sample_row(spec, index)
        apply_row(row, spec)
    except CarprobeError as exc:
        state.preview_error = str(exc)
        state.preview_row = ""
        raise
    state.preview_error = ""
    state.preview_row = json.dumps(row, default=str)
    _redraw_sidebars(context)
    return row


def preview_row(context) -> dict | None:
    text = context.window_manager.carprobe_state.preview_row
    return json.loads(text) if text else None


def factor_items(row: dict) -> list[tuple[str, str]]:
    """(label, value) pairs the Preview panel shows: summary keys, then every factor parameter."""
    items = [(k, str(row[k])) for k in ROW_SUMMARY_KEYS if row.get(k) not in (None, "")]
    for p in schema.PARAMS:
        if p.factor and p.path in row:
            value = row[p.path]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            items.append((p.path, text))
    return items


def _redraw_sidebars(context) -> None:
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            area.tag_redraw()
