"""Preset menus next to text-valued factors: palette colours and the HDRIs bundled in assets/."""

from __future__ import annotations

import bpy

from ...core import schema
from ...core.spec import HDRI_DIR


def bundled_hdris() -> list[str]:
    """Bundled HDRIs as spec values (relative paths resolve against assets/)."""
    if not HDRI_DIR.is_dir():
        return []
    return sorted(f"hdri/{p.name}" for p in HDRI_DIR.iterdir() if p.suffix.lower() in (".exr", ".hdr"))


def _menu_class(path: str, label: str, values) -> type:
    def draw(self, context):
        for value in values():
            op = self.layout.operator("carprobe.insert_value", text=value.removeprefix("hdri/"))
            op.path, op.value = path, value

    ident = "CARPROBE_MT_" + path.replace(".", "_")
    return type(ident, (bpy.types.Menu,), {"bl_idname": ident, "bl_label": label, "draw": draw,
                                           "__doc__": f"Preset values of {path}"})


# parameter path -> its preset menu class
PRESET_MENUS: dict[str, type] = {
    "paint.color": _menu_class("paint.color", "Palette", lambda: list(schema.PALETTE)),
    "background.color": _menu_class("background.color", "Palette", lambda: list(schema.PALETTE)),
    "lighting.hdri": _menu_class("lighting.hdri", "Bundled HDRIs", bundled_hdris),
}
