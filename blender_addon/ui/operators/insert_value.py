"""Put a preset value (palette colour, bundled HDRI) into a parameter's field.

Fixed mode: the value replaces the field. List / choice modes: it is appended to the list.
The preset menus (panels/presets.py) offer the values.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from ...core import schema
from ..fields import format_list, parse_list


class CARPROBE_OT_insert_value(bpy.types.Operator):
    """Use this value for the parameter (appended to the list in list and choice modes)"""

    bl_idname = "carprobe.insert_value"
    bl_label = "Insert Value"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    path: StringProperty(name="Parameter", description="Dotted spec path, e.g. paint.color")
    value: StringProperty(name="Value")

    def execute(self, context):
        p = schema.PARAMS_BY_PATH.get(self.path)
        if p is None or not p.factor or p.kind not in ("color", "path", "str", "enum"):
            self.report({"ERROR"}, f"{self.path!r}: not a factor parameter that takes text values")
            return {"CANCELLED"}
        target = getattr(context.scene.carprobe, p.group)
        mode = getattr(target, f"{p.name}_mode")
        if mode in ("values", "choice"):
            field = f"{p.name}_{mode}"
            try:
                items = parse_list(getattr(target, field), "str", self.path)
            except ValueError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            if self.value not in items:
                setattr(target, field, format_list([*items, self.value], "str"))
        else:
            setattr(target, f"{p.name}_mode", "fixed")
            setattr(target, p.name, self.value)
        return {"FINISHED"}
