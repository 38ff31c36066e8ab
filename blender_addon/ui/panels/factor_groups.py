"""Car, Paint, Lighting, Camera and Background panels, one per factor group of the schema."""

from __future__ import annotations

import bpy

from ...core import schema
from ._draw import CATEGORY, draw_group

_TITLES = {"car": "Car", "paint": "Paint", "lighting": "Lighting", "camera": "Camera",
           "background": "Background"}
_ICONS = {"car": "AUTO", "paint": "MATERIAL", "lighting": "LIGHT_SUN", "camera": "CAMERA_DATA",
          "background": "WORLD"}


def _panel_class(group: str, order: int) -> type:
    def draw(self, context):
        draw_group(self.layout, context.scene.carprobe, group)

    def draw_header(self, context):
        self.layout.label(icon=_ICONS.get(group, "DOT"))

    return type(f"CARPROBE_PT_{group}", (bpy.types.Panel,), {
        "__doc__": f"carprobe spec: {_TITLES.get(group, group)} factors",
        "bl_label": _TITLES.get(group, group.capitalize()),
        "bl_idname": f"CARPROBE_PT_{group}",
        "bl_space_type": "VIEW_3D",
        "bl_region_type": "UI",
        "bl_category": CATEGORY,
        "bl_options": {"DEFAULT_CLOSED"},
        "bl_order": order,
        "group": group,
        "draw": draw,
        "draw_header": draw_header,
    })


# After the Dataset panel (order 0), before Render (order 100).
PANELS: tuple[type, ...] = tuple(_panel_class(g, 10 + i) for i, g in enumerate(schema.FACTOR_GROUPS))
