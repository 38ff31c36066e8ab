"""Dataset panel: the spec file (new / load / save / validate), design and render settings."""

from __future__ import annotations

import bpy

from ...core import schema
from ._draw import CATEGORY, draw_param


class CARPROBE_PT_dataset(bpy.types.Panel):
    """carprobe spec: the dataset design and render settings"""

    bl_label = "Dataset"
    bl_idname = "CARPROBE_PT_dataset"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 0

    def draw(self, context):
        layout = self.layout
        props = context.scene.carprobe
        state = context.window_manager.carprobe_state
        row = layout.row(align=True)
        row.operator("carprobe.new_spec", text="New", icon="FILE_NEW")
        row.operator("carprobe.load_spec", text="Load", icon="FILE_FOLDER")
        row.operator("carprobe.save_spec", text="Save", icon="FILE_TICK")
        if props.spec_path:
            layout.label(text=bpy.path.basename(props.spec_path), icon="FILE_TEXT")
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(props, "name")
        layout.prop(props, "description")
        for group in schema.SETTING_GROUPS:
            col = layout.column(heading=group.capitalize())
            for p in schema.PARAMS:
                if p.group == group:
                    draw_param(col, getattr(props, group), p)
        layout.prop(props, "output_dir")
        row = layout.row()
        row.operator("carprobe.validate_spec", icon="CHECKMARK")
        if state.sample_count:
            row.label(text=f"{state.sample_count} samples")
