"""Blender property groups generated from the schema (see fields.py for the layout).

``scene.carprobe`` (CARPROBE_PG_spec) holds the spec being edited (saved with the .blend):
one pointer per schema group, the spec name, the file it came from, the output folder and the
preview index. ``window_manager.carprobe_state`` (CARPROBE_PG_state) holds transient UI state:
render progress and the previewed sample's values.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..core import schema
from . import fields as F
from .fields import props_to_spec, spec_to_props  # noqa: F401  (re-exported: the GUI's spec bridge)

# Enum items must stay referenced while registered (Blender keeps raw pointers to the strings).
_ENUM_ITEMS: dict[str, list[tuple[str, str, str]]] = {}


def _enum_items(key: str, values, labels: dict | None = None) -> list[tuple[str, str, str]]:
    """(identifier, name, description) items; labels maps identifier -> (name, description)."""
    if key not in _ENUM_ITEMS:
        labels = labels or {}
        _ENUM_ITEMS[key] = [(v, *labels.get(v, (v, v))) for v in values]
    return _ENUM_ITEMS[key]


def _bpy_property(f: F.Field):
    """The bpy.props definition of one field."""
    kw = {"name": f.label, "description": f.description}
    if f.kind == "float":
        kw["default"] = float(f.default)
        if f.minimum is not None:
            kw["min"] = float(f.minimum)
        if f.maximum is not None:
            kw["max"] = float(f.maximum)
        return FloatProperty(precision=3, **kw)
    if f.kind == "int":
        kw["default"] = int(f.default)
        if f.minimum is not None:
            kw["min"] = int(f.minimum)
        if f.maximum is not None:
            kw["max"] = int(f.maximum)
        return IntProperty(**kw)
    if f.kind == "bool":
        return BoolProperty(default=bool(f.default), **kw)
    if f.kind == "enum":
        return EnumProperty(items=_enum_items(f.param.path, f.param.choices, F.ENUM_LABELS.get(f.param.path)),
                            default=f.default, **kw)
    if f.kind == "mode":
        modes = F.MODES_BY_KIND[f.param.kind]
        return EnumProperty(items=_enum_items("mode:" + f.param.kind, modes, F.MODE_LABELS), default="fixed", **kw)
    if f.kind == "path":
        return StringProperty(default=str(f.default), subtype="FILE_PATH", **kw)
    if f.kind == "given":
        return BoolProperty(default=False, options={"HIDDEN"}, **kw)
    if f.kind == "exact":
        return StringProperty(default="", options={"HIDDEN"}, **kw)
    return StringProperty(default=str(f.default), **kw)   # str, color, list


def _group_class(group: str) -> type:
    annotations = {f.name: _bpy_property(f) for f in F.FIELDS[group]}
    return type(f"CARPROBE_PG_{group}", (bpy.types.PropertyGroup,), {
        "__annotations__": annotations,
        "__doc__": f"carprobe spec: [{group}] parameters",
    })


GROUP_CLASSES: tuple[type, ...] = tuple(_group_class(g) for g in schema.GROUPS)


# Set while an operator moves the slider after previewing the sample itself.
SUPPRESS_INDEX_UPDATE = False


def _on_preview_index(self, context) -> None:
    # The slider previews instantly; errors land in the Preview panel (an update callback cannot
    # report), and unexpected ones in the console, never as a traceback popup.
    if SUPPRESS_INDEX_UPDATE:
        return
    from ..core.errors import CarprobeError
    from .preview import preview_sample

    try:
        preview_sample(context, self.preview_index)
    except CarprobeError:
        pass  # preview_sample stored the message for the panel
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exception(exc)
        context.window_manager.carprobe_state.preview_error = f"Preview failed: {type(exc).__name__}: {exc}"


def _spec_annotations() -> dict:
    ann = {
        "name": StringProperty(name="Name", default="untitled", description="Name of the dataset spec"),
        "description": StringProperty(name="Description", default="",
                                      description="Free text about the dataset (not part of its hash)"),
        "spec_path": StringProperty(name="Spec file", subtype="FILE_PATH", default="",
                                    description="The spec file last loaded or saved; relative paths in "
                                                "the spec resolve against its folder"),
        "output_dir": StringProperty(name="Output folder", subtype="DIR_PATH", default="//carprobe_render/",
                                     description="Folder of the render set (images/, metadata.csv, "
                                                 "dataset.json); '//' is the .blend file's folder"),
        "preview_index": IntProperty(name="Sample", min=0, default=0, update=_on_preview_index,
                                     description="Index of the sample shown in the viewport"),
    }
    for cls in GROUP_CLASSES:
        group = cls.__name__.removeprefix("CARPROBE_PG_")
        ann[group] = PointerProperty(type=cls, name=group.capitalize())
    return ann


CARPROBE_PG_spec = type("CARPROBE_PG_spec", (bpy.types.PropertyGroup,), {
    "__annotations__": _spec_annotations(),
    "__doc__": "The carprobe dataset spec edited in the sidebar",
})


class CARPROBE_PG_state(bpy.types.PropertyGroup):
    """Transient UI state (window manager: never saved)."""

    render_running: BoolProperty(name="Rendering", default=False)
    render_done: IntProperty(name="Done", default=0)
    render_total: IntProperty(name="Total", default=0)
    render_progress: FloatProperty(name="Progress", subtype="FACTOR", min=0.0, max=1.0, default=0.0)
    render_message: StringProperty(name="Render status", default="")
    preview_row: StringProperty(name="Previewed sample", default="",
                                description="JSON of the previewed sample's metadata row")
    preview_error: StringProperty(name="Preview error", default="")
    sample_count: IntProperty(name="Samples", default=0)


CLASSES: tuple[type, ...] = (*GROUP_CLASSES, CARPROBE_PG_spec, CARPROBE_PG_state)


def register_properties() -> None:
    bpy.types.Scene.carprobe = PointerProperty(type=CARPROBE_PG_spec, name="carprobe spec")
    bpy.types.WindowManager.carprobe_state = PointerProperty(type=CARPROBE_PG_state, name="carprobe state")


def unregister_properties() -> None:
    del bpy.types.WindowManager.carprobe_state
    del bpy.types.Scene.carprobe
