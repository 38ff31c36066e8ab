"""The GUI's property layout and the spec <-> properties conversion (bpy-free part).

The same conversion runs on real Blender properties in test_gui_addon.py (single-precision
floats); here plain objects stand in for the property groups.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from blender_addon.core import schema
from blender_addon.core.errors import SpecError
from blender_addon.core.spec import load_spec, parse_spec
from blender_addon.ui import fields as F

from gui_specs import SCENES, grid_specs, random_specs


def new_props() -> SimpleNamespace:
    props = SimpleNamespace(**{g: SimpleNamespace() for g in schema.GROUPS})
    F.reset_props(props)
    return props


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def roundtrip(spec, props=None):
    props = props or new_props()
    F.spec_to_props(spec.to_dict(), props)
    data = F.props_to_spec(props)
    return data, parse_spec(data, spec.source_dir)


def test_every_parameter_has_fields_for_every_allowed_form():
    for p in schema.PARAMS:
        names = {f.name for f in F.param_fields(p)}
        assert p.name in names
        if p.factor:
            modes = F.MODES_BY_KIND[p.kind]
            assert modes[0] == "fixed"
            for mode in modes:
                assert F.visible_fields(p, mode), (p.path, mode)
            # every field is shown in at least one mode (hidden twins excepted)
            shown = {f.name for m in modes for f in F.visible_fields(p, m)}
            assert shown == {f.name for f in F.param_fields(p) if not f.hidden}, p.path
    assert set(F.FIELDS) == set(schema.GROUPS)


@pytest.mark.parametrize("path", SCENES, ids=[p.name for p in SCENES])
def test_scene_roundtrip(path):
    spec = load_spec(path)
    data, again = roundtrip(spec)
    assert data == spec.to_dict()
    assert again == spec and again.hash == spec.hash


def test_every_form_roundtrips(tmp_path):
    specs = [parse_spec(d, tmp_path) for d in random_specs(tmp_path)]
    specs += [parse_spec(d, tmp_path) for d in grid_specs()]
    forms_seen = set()
    props = new_props()   # reused: loading a spec must clear whatever the previous one set
    for spec in specs:
        data, again = roundtrip(spec, props)
        assert data == spec.to_dict(), spec.name
        assert again == spec, spec.name
        assert again.to_toml() == spec.to_toml()
        forms_seen |= {(f.param.kind, f.form, f.base != (f.values or [None])[0], f.clip is not None,
                        f.weights is not None) for f in spec.factors.values()}
    for kind, modes in F.MODES_BY_KIND.items():
        for mode in modes:
            assert any(k == kind and form == mode for k, form, *_ in forms_seen), (kind, mode)


def test_single_precision_fields_keep_exact_numbers_until_edited(tmp_path):
    spec = parse_spec({"schema": 1, "name": "p", "camera": {"jitter": 0.123456789,
                                                           "distance": {"uniform": [2.0000001, 7.3]}},
                       "design": {"kind": "random", "count": 2}}, tmp_path)
    props = new_props()
    F.spec_to_props(spec.to_dict(), props)
    # What Blender does to a float property: single precision.
    props.camera.jitter = f32(props.camera.jitter)
    props.camera.distance_uniform_lo = f32(props.camera.distance_uniform_lo)
    assert F.props_to_spec(props)["camera"] == {"jitter": 0.123456789, "distance": {"uniform": [2.0000001, 7.3]}}
    # An edit in the UI: the field no longer shows the spec's number; write the shortest decimal.
    props.camera.jitter = f32(0.3)
    assert F.props_to_spec(props)["camera"]["jitter"] == 0.3


def test_props_write_only_given_or_changed_parameters():
    props = new_props()
    assert F.props_to_spec(props) == {"schema": 1, "name": "untitled"}
    props.camera.azimuth_mode = "values"
    props.camera.azimuth_values = "0, 90.5, 180"
    props.paint.color = "hsv(0.5,1.0,1.0)"
    props.design.kind = "grid"
    props.design.across = ""
    data = F.props_to_spec(props)
    assert data["camera"] == {"azimuth": {"values": [0, 90.5, 180]}}
    assert data["paint"] == {"color": "hsv(0.5,1.0,1.0)"}
    assert data["design"] == {"kind": "grid"}
    parse_spec(data)


def test_bad_fields_are_reported_by_name():
    props = new_props()
    props.car.shape_seed_mode = "values"
    props.car.shape_seed_values = "1, 2.5, x"
    props.camera.focal_length_mode = "choice"
    props.camera.focal_length_choice = "35, 50"
    props.camera.focal_length_weights = "1, heavy"
    with pytest.raises(SpecError) as err:
        F.props_to_spec(props)
    text = str(err.value)
    assert "car.shape_seed.values: '2.5' is not a valid int value" in text
    assert "camera.focal_length.weights: 'heavy'" in text


def test_specs_the_gui_cannot_hold_are_refused_not_truncated():
    props = new_props()
    with pytest.raises(SpecError, match="car.shape_seed: 4294967296 is outside the GUI range"):
        F.spec_to_props({"schema": 1, "name": "big", "car": {"shape_seed": 2**32}}, props)
    with pytest.raises(SpecError, match="camera.zoom: unknown parameter"):
        F.spec_to_props({"schema": 1, "camera": {"zoom": 2}}, props)


@pytest.mark.parametrize("text, items", [
    ("", []),
    ("red, #00ff00, rgb(0.1,0.2,0.3)", ["red", "#00ff00", "rgb(0.1,0.2,0.3)"]),
    ('a, "b, c", "say \\"hi\\"", ""', ["a", "b, c", 'say "hi"', ""]),
    ("hsv(0.5,1.0,1.0) ,  navy", ["hsv(0.5,1.0,1.0)", "navy"]),
])
def test_list_fields_split_on_top_level_commas(text, items):
    assert F.parse_list(text, "str", "x") == items
    assert F.parse_list(F.format_list(items, "str"), "str", "x") == items


def test_list_fields_keep_number_types():
    assert F.parse_list("1, 2.5, -3e-2", "float", "x") == [1, 2.5, -0.03]
    assert F.parse_list("true, False", "bool", "x") == [True, False]
    assert F.format_list([1, 2.5, True, "true"], "str") == '1, 2.5, true, "true"'
    with pytest.raises(ValueError, match="x: '1.5' is not a valid int value"):
        F.parse_list("1, 1.5", "int", "x")
    with pytest.raises(ValueError, match="empty item"):
        F.parse_list("1,,2", "float", "x")
