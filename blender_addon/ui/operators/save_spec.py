"""Save the sidebar's dataset spec as TOML (the file a headless render reads unchanged)."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ExportHelper

from ._report import report_exception


class CARPROBE_OT_save_spec(bpy.types.Operator, ExportHelper):
    """Save the carprobe sidebar's dataset spec as a TOML file"""

    bl_idname = "carprobe.save_spec"
    bl_label = "Save Spec"
    bl_options = {"REGISTER"}

    filename_ext = ".toml"
    filter_glob: StringProperty(default="*.toml", options={"HIDDEN"})

    def execute(self, context):
        from ..preview import current_spec

        props = context.scene.carprobe
        path = Path(bpy.path.abspath(self.filepath))
        try:
            spec = current_spec(context)   # validated before anything is written
            text = spec.to_toml()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)     # atomic: an existing spec is never left half-written
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Save spec")
        props.spec_path = str(path)
        self.report({"INFO"}, f"Saved spec {spec.name!r} to {path}")
        return {"FINISHED"}
