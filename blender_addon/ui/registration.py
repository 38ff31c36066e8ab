"""Registration of the GUI: every class from the one CLASSES list, in order (property groups
before the groups that point at them, parent panels before their children)."""

from __future__ import annotations

from . import props
from .operators.clear_preview import CARPROBE_OT_clear_preview
from .operators.insert_value import CARPROBE_OT_insert_value
from .operators.load_spec import CARPROBE_OT_load_spec
from .operators.new_spec import CARPROBE_OT_new_spec
from .operators.preview_sample import CARPROBE_OT_preview_sample
from .operators.randomize_sample import CARPROBE_OT_randomize_sample
from .operators.render_dataset import CARPROBE_OT_render_dataset
from .operators.save_spec import CARPROBE_OT_save_spec
from .operators.validate_spec import CARPROBE_OT_validate_spec
from .panels.dataset import CARPROBE_PT_dataset
from .panels.factor_groups import PANELS as FACTOR_PANELS
from .panels.presets import PRESET_MENUS
from .panels.preview import CARPROBE_PT_preview
from .panels.render import CARPROBE_PT_render

OPERATORS: tuple[type, ...] = (
    CARPROBE_OT_new_spec,
    CARPROBE_OT_load_spec,
    CARPROBE_OT_save_spec,
    CARPROBE_OT_validate_spec,
    CARPROBE_OT_preview_sample,
    CARPROBE_OT_randomize_sample,
    CARPROBE_OT_clear_preview,
    CARPROBE_OT_insert_value,
    CARPROBE_OT_render_dataset,
)
PANELS: tuple[type, ...] = (CARPROBE_PT_dataset, CARPROBE_PT_preview, *FACTOR_PANELS, CARPROBE_PT_render)
MENUS: tuple[type, ...] = tuple(PRESET_MENUS.values())
CLASSES: tuple[type, ...] = (*props.CLASSES, *OPERATORS, *MENUS, *PANELS)


def register() -> None:
    import bpy

    for cls in CLASSES:
        bpy.utils.register_class(cls)
    props.register_properties()


def unregister() -> None:
    import bpy

    from .operators.render_dataset import cancel_running_jobs

    cancel_running_jobs()
    props.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
