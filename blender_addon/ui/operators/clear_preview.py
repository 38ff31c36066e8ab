"""Remove everything the preview added to the scene (carprobe collection and data blocks)."""

from __future__ import annotations

import bpy

from ._report import report_exception


class CARPROBE_OT_clear_preview(bpy.types.Operator):
    """Remove the preview's car, lights, ground, camera and world from the file"""

    bl_idname = "carprobe.clear_preview"
    bl_label = "Clear Preview"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from ...blender.scene import clear_scene

        try:
            clear_scene(context.scene)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Clear preview")
        context.window_manager.carprobe_state.preview_row = ""
        self.report({"INFO"}, "Removed the carprobe preview from the scene")
        return {"FINISHED"}
