"""Load a dataset spec (TOML) into the sidebar."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from ._report import report_exception


class CARPROBE_OT_load_spec(bpy.types.Operator, ImportHelper):
    """Load a dataset spec (TOML) into the carprobe sidebar"""

    bl_idname = "carprobe.load_spec"
    bl_label = "Load Spec"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".toml"
    filter_glob: StringProperty(default="*.toml", options={"HIDDEN"})

    def execute(self, context):
        from ...core.spec import load_spec
        from ..fields import spec_to_props

        props = context.scene.carprobe
        try:
            spec = load_spec(self.filepath)
            spec_to_props(spec.to_dict(), props)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Load spec")
        props.spec_path = self.filepath
        context.window_manager.carprobe_state.preview_row = ""
        self.report({"INFO"}, f"Loaded spec {spec.name!r} from {self.filepath}")
        return {"FINISHED"}
