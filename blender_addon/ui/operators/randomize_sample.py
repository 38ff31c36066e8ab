"""Preview a random sample of the spec."""

from __future__ import annotations

import random

import bpy

from ._report import report_exception


class CARPROBE_OT_randomize_sample(bpy.types.Operator):
    """Preview a randomly chosen sample of the dataset spec"""

    bl_idname = "carprobe.randomize_sample"
    bl_label = "Randomize"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from ...core.sampling import sample_count
        from ..preview import current_spec, preview_sample

        props = context.scene.carprobe
        try:
            spec = current_spec(context)
            count = sample_count(spec)
            if count < 1:
                raise ValueError("the spec has no samples")
            index = random.randrange(count)
            if count > 1:
                while index == props.preview_index:   # always show a different sample
                    index = random.randrange(count)
            # Setting the slider would preview through its update callback, which swallows errors;
            # preview here (to report them) and move the slider without re-triggering.
            preview_sample(context, index, spec)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Randomize")
        _set_index_quietly(props, index)
        self.report({"INFO"}, f"Sample {index} of {count}")
        return {"FINISHED"}


def _set_index_quietly(props, index: int) -> None:
    from .. import props as props_module

    props_module.SUPPRESS_INDEX_UPDATE = True
    try:
        props.preview_index = index
    finally:
        props_module.SUPPRESS_INDEX_UPDATE = False
