"""Drawing helpers shared by the sidebar panels (the widgets follow fields.py)."""

from __future__ import annotations

from ...core import schema
from .. import fields as F

CATEGORY = "carprobe"

# Fields drawn greyed out unless their flag is on.
_FLAGGED = {"_base": "_use_base", "_clip_lo": "_use_clip", "_clip_hi": "_use_clip"}


def draw_param(layout, target, p: schema.Param) -> None:
    """One parameter: its mode selector (factors) and the fields of the current mode."""
    from .presets import PRESET_MENUS

    col = layout.column(align=True)
    mode = None
    if p.factor:
        mode = getattr(target, f"{p.name}_mode")
        row = col.row(align=True)
        row.prop(target, f"{p.name}_mode", text=F.param_fields(p)[0].label)
        menu = PRESET_MENUS.get(p.path)
        if menu is not None and mode in ("fixed", "values", "choice"):
            row.menu(menu.bl_idname, text="", icon="PRESET")
    for f in F.visible_fields(p, mode):
        if f.kind == "mode":
            continue
        row = col.row(align=True)
        for suffix, flag in _FLAGGED.items():
            if f.name == p.name + suffix:
                row.active = bool(getattr(target, p.name + flag))
        text = f.label if p.factor else None
        if text is None:
            row.prop(target, f.name)
        else:
            row.prop(target, f.name, text=text)


def draw_group(layout, props, group: str) -> None:
    """Every parameter of one schema group."""
    layout.use_property_split = True
    layout.use_property_decorate = False
    target = getattr(props, group)
    for p in schema.PARAMS:
        if p.group == group:
            draw_param(layout, target, p)
