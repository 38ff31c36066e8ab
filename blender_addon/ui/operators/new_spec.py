"""Reset the sidebar to the schema defaults (a new spec)."""

from __future__ import annotations

import bpy


class CARPROBE_OT_new_spec(bpy.types.Operator):
    """Reset every spec field to its default"""

    bl_idname = "carprobe.new_spec"
    bl_label = "New Spec"
    bl_options = {"REGISTER", "UNDO"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        from ..fields import reset_props

        props = context.scene.carprobe
        reset_props(props)
        props.spec_path = ""
        context.window_manager.carprobe_state.preview_row = ""
        self.report({"INFO"}, "New spec with default values")
        return {"FINISHED"}
