"""Show one sample of the spec in the viewport scene."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from ._report import report_exception


class CARPROBE_OT_preview_sample(bpy.types.Operator):
    """Build sample i of the dataset spec in the scene (car, paint, lights, camera, background)"""

    bl_idname = "carprobe.preview_sample"
    bl_label = "Preview Sample"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Index", default=-1, min=-1,
                       description="Sample index; -1 = the Sample slider's index")

    def execute(self, context):
        from ..preview import preview_sample

        index = context.scene.carprobe.preview_index if self.index < 0 else self.index
        try:
            row = preview_sample(context, index)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Preview")
        self.report({"INFO"}, f"Sample {index}: {row.get('car_id', '')}")
        return {"FINISHED"}
