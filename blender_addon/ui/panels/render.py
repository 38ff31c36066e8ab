"""Render panel: output folder, the Render Dataset button and its progress."""

from __future__ import annotations

import bpy

from ._draw import CATEGORY


class CARPROBE_PT_render(bpy.types.Panel):
    """Render the whole dataset spec to a render set"""

    bl_label = "Render"
    bl_idname = "CARPROBE_PT_render"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 100

    def draw(self, context):
        layout = self.layout
        props = context.scene.carprobe
        state = context.window_manager.carprobe_state
        layout.prop(props, "output_dir")
        row = layout.row()
        row.enabled = not state.render_running
        row.operator("carprobe.render_dataset", icon="RENDER_RESULT")
        if state.render_running or state.render_total:
            text = f"{state.render_done} / {state.render_total}"
            if hasattr(layout, "progress"):   # UILayout.progress: Blender 4.0+
                layout.progress(factor=state.render_progress, type="BAR", text=text)
            else:
                layout.prop(state, "render_progress", text=text, slider=True)
        if state.render_running:
            layout.label(text="Esc cancels; rerun resumes", icon="INFO")
        if state.render_message:
            layout.label(text=state.render_message)
