"""Preview sub-panel: the sample slider, Randomize, and the previewed sample's factor values."""

from __future__ import annotations

import bpy

from ..preview import factor_items, preview_row
from ._draw import CATEGORY


class CARPROBE_PT_preview(bpy.types.Panel):
    """Show any sample of the spec in the viewport"""

    bl_label = "Preview"
    bl_idname = "CARPROBE_PT_preview"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "CARPROBE_PT_dataset"
    bl_order = 1

    def draw(self, context):
        layout = self.layout
        props = context.scene.carprobe
        state = context.window_manager.carprobe_state
        row = layout.row(align=True)
        row.prop(props, "preview_index")
        row.operator("carprobe.randomize_sample", text="", icon="FILE_REFRESH")
        row.operator("carprobe.preview_sample", text="", icon="HIDE_OFF").index = -1
        row.operator("carprobe.clear_preview", text="", icon="TRASH")
        if state.preview_error:
            box = layout.box()
            for i, line in enumerate(state.preview_error.splitlines()):
                box.label(text=line.strip(), icon="ERROR" if i == 0 else "BLANK1")
            return
        row_data = preview_row(context)
        if row_data is None:
            layout.label(text="Move the slider to preview a sample", icon="INFO")
            return
        col = layout.column(align=True)
        for key, value in factor_items(row_data):
            split = col.split(factor=0.55)
            split.label(text=key)
            split.label(text=value)
