"""Check the sidebar's spec exactly as `carprobe validate` checks a file."""

from __future__ import annotations

import bpy

from ._report import report_exception


class CARPROBE_OT_validate_spec(bpy.types.Operator):
    """Check the dataset spec and count its samples"""

    bl_idname = "carprobe.validate_spec"
    bl_label = "Validate"
    bl_options = {"REGISTER"}

    def execute(self, context):
        from ...core.sampling import sample_count
        from ..preview import current_spec

        try:
            spec = current_spec(context)
            count = sample_count(spec)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Validate")
        context.window_manager.carprobe_state.sample_count = count
        self.report({"INFO"}, f"Spec {spec.name!r} is valid: {count} samples")
        return {"FINISHED"}
