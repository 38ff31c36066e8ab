"""The extension registered from the checkout: register/unregister, properties, panels.

Operators and the command handler run against the installed zip in test_gui_extension.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import bpy
import pytest

import blender_addon
from blender_addon.core import car_models, schema
from blender_addon.core.spec import load_spec, parse_spec
from blender_addon.ui import fields as F
from gui_specs import SCENES, grid_specs, random_specs


def blender_state() -> dict:
    """What register/unregister may change: RNA types, handlers, data blocks, operators."""
    handlers = {k: len(v) for k in dir(bpy.app.handlers) if not k.startswith("_")
                and isinstance(v := getattr(bpy.app.handlers, k), list)}
    data = {k: len(v) for k in dir(bpy.data) if not k.startswith("_")
            and isinstance(v := getattr(bpy.data, k), bpy.types.bpy_prop_collection)}
    return {
        "scene_prop": hasattr(bpy.types.Scene, "carprobe"),
        "wm_prop": hasattr(bpy.types.WindowManager, "carprobe_state"),
        "types": sorted(n for n in dir(bpy.types) if n.startswith("CARPROBE_")),
        "groups": [g for g in ("spec", "state", *schema.GROUPS)
                   if bpy.types.PropertyGroup.bl_rna_get_subclass_py(f"CARPROBE_PG_{g}") is not None],
        "ops": sorted(dir(bpy.ops.carprobe)),
        "handlers": handlers,
        "data": data,
        "timers": bpy.app.timers.is_registered,
        "cli": blender_addon._cli_handle,
    }


def test_register_unregister_leaves_blender_as_found():
    before = blender_state()
    assert not before["scene_prop"] and before["types"] == before["groups"] == [] and before["cli"] is None
    for _ in range(2):
        blender_addon.register()
        during = blender_state()
        assert during["scene_prop"] and during["wm_prop"]
        assert "CARPROBE_PT_car" in during["types"] and "CARPROBE_OT_render_dataset" in during["types"]
        assert len(during["groups"]) == 2 + len(schema.GROUPS)
        assert {"load_spec", "save_spec", "preview_sample", "randomize_sample", "validate_spec",
                "render_dataset", "new_spec", "clear_preview", "insert_value"} <= set(during["ops"])
        if hasattr(bpy.utils, "register_cli_command"):
            assert during["cli"] is not None
        assert during["handlers"] == before["handlers"] and during["data"] == before["data"]
        assert bpy.context.scene.carprobe.camera.azimuth == pytest.approx(30.0)
        blender_addon.unregister()
        assert blender_state() == before


@pytest.fixture(scope="module")
def addon():
    blender_addon.register()
    yield bpy.context.scene.carprobe
    blender_addon.unregister()
    assert not hasattr(bpy.types.Scene, "carprobe")


def test_every_spec_field_has_a_property(addon):
    for group in schema.GROUPS:
        rna = getattr(addon, group).bl_rna.properties
        for f in F.FIELDS[group]:
            assert f.name in rna, f"{group}.{f.name}"
        for p in schema.PARAMS:
            if p.group == group and p.factor:
                items = [i.identifier for i in rna[f"{p.name}_mode"].enum_items]
                assert tuple(items) == F.MODES_BY_KIND[p.kind]
            elif p.group == group and p.kind == "enum":
                assert tuple(i.identifier for i in rna[p.name].enum_items) == p.choices


def test_body_menu_lists_the_shipped_car_models(addon):
    items = {i.identifier: i for i in addon.car.bl_rna.properties["body"].enum_items}
    assert len(car_models.SHIPPED_IDS) >= 8
    for model in car_models.SHIPPED_IDS:
        assert model in items and car_models.SHIPPED[model].style in items[model].name
    addon.car.body = car_models.SHIPPED_IDS[0]
    assert F.props_to_spec(addon)["car"]["body"] == car_models.SHIPPED_IDS[0]


@pytest.mark.parametrize("path", SCENES, ids=[p.name for p in SCENES])
def test_scenes_roundtrip_through_blender_properties(addon, path):
    spec = load_spec(path)
    F.spec_to_props(spec.to_dict(), addon)
    data = F.props_to_spec(addon)
    assert data == spec.to_dict()
    assert parse_spec(data, spec.source_dir) == spec


def test_every_form_roundtrips_through_blender_properties(addon, tmp_path):
    for raw in random_specs(tmp_path) + grid_specs():
        spec = parse_spec(raw, tmp_path)
        F.spec_to_props(spec.to_dict(), addon)
        data = F.props_to_spec(addon)
        assert data == spec.to_dict(), spec.name
        assert parse_spec(data, tmp_path).to_toml() == spec.to_toml()


def test_ui_edits_give_clean_numbers(addon):
    F.spec_to_props({"schema": 1, "name": "edit", "camera": {"jitter": 0.123456789}}, addon)
    assert F.props_to_spec(addon)["camera"]["jitter"] == 0.123456789
    addon.camera.jitter = 0.3            # stored in single precision by Blender
    addon.camera.distance = 7.1
    assert F.props_to_spec(addon)["camera"] == {"jitter": 0.3, "distance": 7.1}


# --- panels -----------------------------------------------------------------------------------

class RecordingLayout:
    """Stands in for bpy.types.UILayout: records prop/operator/label calls of every sub-layout."""

    def __init__(self, log: list):
        self.__dict__["log"] = log

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, f"{data.bl_rna.identifier} has no property {name!r}"
        self.log.append(("prop", data.bl_rna.identifier, name))

    def operator(self, idname, **kw):
        group, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, group), op), idname
        self.log.append(("operator", idname))
        return SimpleNamespace()

    def menu(self, idname, **kw):
        assert hasattr(bpy.types, idname), idname
        self.log.append(("menu", idname))

    def label(self, text="", **kw):
        self.log.append(("label", text))

    def progress(self, text="", **kw):
        self.log.append(("progress", text))

    def __getattr__(self, name):   # row(), column(), box(), split(), separator(), ...
        return lambda *args, **kw: RecordingLayout(self.log)

    def __setattr__(self, name, value):   # active, enabled, use_property_split, ...
        self.__dict__[name] = value


def draw(panel_cls) -> list:
    log: list = []
    context = SimpleNamespace(scene=bpy.context.scene, window_manager=bpy.context.window_manager)
    panel_cls.draw(SimpleNamespace(layout=RecordingLayout(log)), context)
    return log


def panel(name: str) -> type:
    from blender_addon.ui import registration

    (cls,) = [c for c in registration.PANELS if c.__name__ == name]
    return cls


@pytest.mark.parametrize("group", schema.FACTOR_GROUPS)
def test_factor_panels_show_every_field_of_every_mode(addon, group):
    F.reset_props(addon)
    target = getattr(addon, group)
    cls = panel(f"CARPROBE_PT_{group}")
    assert cls.bl_category == "carprobe" and cls.bl_space_type == "VIEW_3D" and cls.bl_region_type == "UI"
    params = [p for p in schema.PARAMS if p.group == group]
    shown_any: set[str] = set()
    for p in params:
        for mode in F.MODES_BY_KIND[p.kind]:
            setattr(target, f"{p.name}_mode", mode)
            shown = {name for kind, ident, name in (e for e in draw(cls) if e[0] == "prop")}
            expected = {f.name for f in F.visible_fields(p, mode)}
            assert expected <= shown, (p.path, mode, expected - shown)
            # fields of the other modes are hidden
            others = {f.name for f in F.param_fields(p)} - expected
            assert not (others & shown), (p.path, mode, others & shown)
            shown_any |= shown
        setattr(target, f"{p.name}_mode", "fixed")
    assert shown_any == {f.name for f in F.FIELDS[group] if not f.hidden}


def test_preset_menus_fill_fixed_and_list_fields(addon):
    from blender_addon.ui.panels.presets import PRESET_MENUS, bundled_hdris

    F.reset_props(addon)
    assert ("menu", "CARPROBE_MT_paint_color") in draw(panel("CARPROBE_PT_paint"))
    assert ("menu", "CARPROBE_MT_lighting_hdri") in draw(panel("CARPROBE_PT_lighting"))
    assert set(PRESET_MENUS) == {"paint.color", "background.color", "lighting.hdri"}
    hdris = bundled_hdris()
    assert hdris and all(h.startswith("hdri/") for h in hdris)
    assert bpy.ops.carprobe.insert_value(path="lighting.hdri", value=hdris[0]) == {"FINISHED"}
    assert addon.lighting.hdri == hdris[0]
    addon.paint.color_mode = "values"
    addon.paint.color_values = "red, rgb(0.1,0.2,0.3)"
    bpy.ops.carprobe.insert_value(path="paint.color", value="navy")
    bpy.ops.carprobe.insert_value(path="paint.color", value="red")      # already listed
    assert addon.paint.color_values == "red, rgb(0.1,0.2,0.3), navy"
    data = F.props_to_spec(addon)
    assert data["lighting"]["hdri"] == hdris[0]
    parse_spec(data)   # the bundled HDRI resolves against assets/
    with pytest.raises(RuntimeError, match="not a factor parameter"):
        bpy.ops.carprobe.insert_value(path="render.width", value="3")


def test_dataset_panel_shows_settings_and_spec_operators(addon):
    F.reset_props(addon)
    log = draw(panel("CARPROBE_PT_dataset"))
    props = {(ident, name) for kind, ident, name in (e for e in log if e[0] == "prop")}
    for group in schema.SETTING_GROUPS:
        for f in F.FIELDS[group]:
            if not f.hidden:
                assert (f"CARPROBE_PG_{group}", f.name) in props, f.name
    assert {("CARPROBE_PG_spec", "name"), ("CARPROBE_PG_spec", "description"),
            ("CARPROBE_PG_spec", "output_dir")} <= props
    ops = {e[1] for e in log if e[0] == "operator"}
    assert {"carprobe.new_spec", "carprobe.load_spec", "carprobe.save_spec", "carprobe.validate_spec"} <= ops


def test_preview_panel_shows_slider_and_sample_values(addon):
    state = bpy.context.window_manager.carprobe_state
    state.preview_row = ""
    state.preview_error = ""
    log = draw(panel("CARPROBE_PT_preview"))
    assert ("prop", "CARPROBE_PG_spec", "preview_index") in log
    assert {"carprobe.randomize_sample", "carprobe.preview_sample", "carprobe.clear_preview"} <= \
        {e[1] for e in log if e[0] == "operator"}
    row = {"index": 3, "car_id": "suv-0002", "subset": "", "seed": 77, "camera.azimuth": 45.0,
           "paint.color": "red", "car.body": "suv", "file_name": "images/000003.png"}
    import json

    state.preview_row = json.dumps(row)
    labels = [e[1] for e in draw(panel("CARPROBE_PT_preview")) if e[0] == "label"]
    assert labels[:6] == ["index", "3", "car_id", "suv-0002", "seed", "77"]
    assert "camera.azimuth" in labels and "45" in labels and "paint.color" in labels and "red" in labels
    assert "file_name" not in labels
    state.preview_error = "spec: 1 problem(s):\n  - camera.azimuth = 999: out of range"
    labels = [e[1] for e in draw(panel("CARPROBE_PT_preview")) if e[0] == "label"]
    assert labels[-2:] == ["spec: 1 problem(s):", "- camera.azimuth = 999: out of range"]
    state.preview_row = state.preview_error = ""


def test_render_panel_shows_progress(addon):
    state = bpy.context.window_manager.carprobe_state
    # A finished render earlier in this process leaves its counts; start from an idle panel.
    state.render_running, state.render_done, state.render_total, state.render_progress = False, 0, 0, 0.0
    log = draw(panel("CARPROBE_PT_render"))
    assert ("operator", "carprobe.render_dataset") in log and ("prop", "CARPROBE_PG_spec", "output_dir") in log
    assert not [e for e in log if e[0] == "progress"]
    state.render_running, state.render_done, state.render_total, state.render_progress = True, 3, 12, 0.25
    log = draw(panel("CARPROBE_PT_render"))
    assert ("progress", "3 / 12") in log
    assert ("label", "Esc cancels; rerun resumes") in log
    state.render_running, state.render_done, state.render_total, state.render_progress = False, 0, 0, 0.0


# --- the modal render operator, driven without a window -------------------------------------

class FakeWindowManager:
    def __init__(self):
        self.carprobe_state = SimpleNamespace(render_running=True, render_done=0, render_total=0,
                                              render_progress=0.0, render_message="")
        self.removed = []

    def event_timer_remove(self, timer):
        self.removed.append(timer)


class FakeOperator:
    """The modal operator's methods on a plain object (Blender creates operators only in bpy.ops)."""

    def __init__(self, job):
        from blender_addon.ui.operators import render_dataset as module

        cls = module.CARPROBE_OT_render_dataset
        self.modal = cls.modal.__get__(self)
        self._stop = cls._stop.__get__(self)
        self._show = cls._show.__get__(self)
        self.step_seconds = 0.0                 # one image per timer tick
        self._job, self._timer, self._key = job, object(), id(job)
        module._ACTIVE[self._key] = (job, self._timer)
        self.reports = []

    def report(self, kind, message):
        self.reports.append((set(kind), message))


def modal_context():
    status = []
    workspace = SimpleNamespace(status_text_set=status.append)
    return SimpleNamespace(window_manager=FakeWindowManager(), workspace=workspace, screen=None), status


def tiny_job(tmp_path, render_image):
    from blender_addon.ui.render_job import RenderJob

    spec = parse_spec({"schema": 1, "name": "modal", "render": {"masks": False},
                       "camera": {"azimuth": {"values": [0, 90, 180, 270]}}})
    return RenderJob(spec, tmp_path / "set", render_image)


def fake_render(row, image_path, mask_path):
    if row["index"] == 2 and os.environ.get("CARPROBE_TEST_FAIL") == "1":
        raise RuntimeError("GPU on fire")
    from PIL import Image
    Image.new("RGB", (4, 3)).save(image_path)  # the loop checks it is a whole PNG


import os  # noqa: E402


def test_modal_render_steps_on_timer_events_and_finishes(tmp_path):
    from blender_addon.core.render_set import read_render_set

    job = tiny_job(tmp_path, fake_render)
    op = FakeOperator(job)
    context, status = modal_context()
    timer = SimpleNamespace(type="TIMER", value="NOTHING")
    assert op.modal(context, SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"PASS_THROUGH"}
    results = [op.modal(context, timer) for _ in range(4)]
    assert results == [{"RUNNING_MODAL"}] * 3 + [{"FINISHED"}]
    state = context.window_manager.carprobe_state
    assert (state.render_done, state.render_total, state.render_progress) == (4, 4, 1.0)
    assert not state.render_running and context.window_manager.removed == [op._timer]
    assert "(Esc to cancel)" in status[0] and status[-1] is None
    assert [r["index"] for r in read_render_set(tmp_path / "set").rows] == [0, 1, 2, 3]
    assert op.reports == [({"INFO"}, job.status())]


def test_modal_render_esc_cancels_and_keeps_work(tmp_path):
    from blender_addon.core.render_set import read_render_set

    job = tiny_job(tmp_path, fake_render)
    op = FakeOperator(job)
    context, _ = modal_context()
    op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING"))
    assert op.modal(context, SimpleNamespace(type="ESC", value="PRESS")) == {"CANCELLED"}
    assert job.cancelled and not context.window_manager.carprobe_state.render_running
    assert [r["index"] for r in read_render_set(tmp_path / "set").rows] == [0]
    (kind, message), = op.reports
    assert kind == {"WARNING"} and "cancelled after 1/4" in message and "resume" in message


def test_modal_render_errors_become_reports(tmp_path, monkeypatch, capsys):
    from blender_addon.core.render_set import read_render_set

    monkeypatch.setenv("CARPROBE_TEST_FAIL", "1")
    job = tiny_job(tmp_path, fake_render)
    op = FakeOperator(job)
    context, _ = modal_context()
    timer = SimpleNamespace(type="TIMER", value="NOTHING")
    assert [op.modal(context, timer) for _ in range(3)][-1] == {"CANCELLED"}
    (kind, message), = op.reports
    assert kind == {"ERROR"} and "RuntimeError: GPU on fire" in message and "Traceback" not in message
    assert "stopped at image 2/4" in context.window_manager.carprobe_state.render_message
    assert [r["index"] for r in read_render_set(tmp_path / "set").rows] == [0, 1]
    assert "Traceback" in capsys.readouterr().err     # the details go to the console
