"""Spec loading and validation: every problem reported once, with field, value and what is allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from blender_addon import cli
from blender_addon.core import schema
from blender_addon.core.colors import parse_color, srgb_to_linear, linear_to_srgb
from blender_addon.core.errors import CarprobeError, SpecError
from blender_addon.core.spec import load_spec, parse_spec, dumps_toml

REPO = Path(__file__).resolve().parents[2]
SCENES = sorted((REPO / "scenes").glob("*.toml"))


def problems_of(data: dict, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec({"schema": 1, **data}, **kw)
    return info.value.problems


def test_ready_scenes_exist_and_are_valid():
    names = {p.stem for p in SCENES}
    assert {"quick", "paper_grid", "kobs2021", "benchmark"} <= names
    for path in SCENES:
        spec = load_spec(path)
        assert spec.name == path.stem


def test_minimal_spec_takes_every_default():
    spec = parse_spec({"schema": 1})
    for p in schema.PARAMS:
        if p.factor:
            assert spec.factor(p.path).form == "fixed" and spec.factor(p.path).base == p.default
        else:
            assert spec.setting(p.path) == (tuple(p.default) if p.kind == "strlist" else p.default)
    assert spec.name == "unnamed" and spec.varying_factors == []


@pytest.mark.parametrize("data, needle", [
    ({"camera": {"azimth": 3.0}}, "camera.azimth = 3.0: unknown parameter (did you mean 'azimuth'?)"),
    ({"camera": {"color": "red"}}, "did you mean paint.color or background.color?"),
    ({"nmae": "x"}, "nmae = \"x\": unknown top-level key (did you mean 'name'?)"),
    ({"camera": {"elevation": 95.0}}, "camera.elevation = 95.0: out of range; allowed in -10 .. 89 deg"),
    ({"camera": {"distance": "far"}}, "camera.distance = \"far\": must be a number in 1 .. 100 m"),
    ({"car": {"shape_seed": 1.5}}, "car.shape_seed = 1.5: must be an integer"),
    ({"background": {"ground": 1}}, "background.ground = 1: must be true or false"),
    ({"car": {"body": "limo"}}, "car.body = \"limo\": unknown value; allowed: sedan | hatchback"),
    ({"design": {"kind": "gird"}}, "design.kind = \"gird\": unknown value (did you mean 'grid'?)"),
    ({"paint": {"color": "redd"}}, "paint.color = \"redd\": not a colour; allowed: a palette name"),
    ({"paint": {"color": "rgb(255, 0, 0)"}}, "components must lie in 0..1 (for 0..255 components write '#rrggbb')"),
    ({"paint": {"color": {"values": []}}}, "paint.color.values = []: must not be empty"),
    ({"camera": {"azimuth": {"values": [0.0, 500.0]}}}, "camera.azimuth.values[1] = 500.0: out of range"),
    ({"camera": {"azimuth": {"values": [0.0, 0.0]}}}, "duplicate values 0.0"),
    ({"camera": {"azimuth": {"range": [0.0, 90.0, 0.0]}}}, "needs start <= stop and step > 0"),
    ({"camera": {"azimuth": [0.0, 90.0]}}, "a list must be written as a variation table"),
    ({"camera": {"azimuth": {"valeus": [0.0]}}}, "has no variation form; give exactly one of: values, range"),
    ({"camera": {"azimuth": {"values": [0.0], "bsae": 0.0}}}, "camera.azimuth.bsae = 0.0: unknown key (did you mean 'base'?)"),
    ({"car": {"body": {"hsv": [[0.0], [1.0], [1.0]]}}}, "car.body.hsv = [[0.0], [1.0], [1.0]]: not allowed for enum parameters"),
    ({"camera": {"azimuth": {"uniform": [0.0, 90.0]}}}, "camera.azimuth.uniform = [0.0, 90.0]: a distribution is only allowed in a random design"),
    ({"design": {"kind": "random"}}, "design.count = 0: a random design needs count > 0"),
    ({"design": {"across": ["camera.azimuth"]}}, "design.across[0] = \"camera.azimuth\": camera.azimuth is not given as a list"),
    ({"design": {"across": ["car.bdy"]}}, "not a factor parameter (did you mean 'car.body'?)"),
    ({"design": {"kind": "grid", "across": ["car.body"]}, "car": {"body": {"values": ["suv", "van"]}}},
     "design.across = [\"car.body\"]: only used by design.kind = 'one_at_a_time'"),
    ({"render": {"width": {"values": [64, 128]}}}, "settings take a single fixed value"),
    ({"render": {"width": 4}}, "render.width = 4: out of range; allowed in 8 .. 8192 px"),
    ({"car": {"body": "model"}}, "car.model_file = \"\": required when car.body can be 'model'"),
    ({"car": {"model_file": "car.stl"}}, "car.model_file = \"car.stl\": unsupported file type '.stl'; allowed: .blend"),
    ({"car": {"model_file": "nowhere.glb"}}, "car.model_file = \"nowhere.glb\": file not found"),
    ({"background": {"kind": "image"}}, "background.image = \"\": required when background.kind can be 'image'"),
    ({"camera": {"distance": {"normal": [8.0, -1.0]}}, "design": {"kind": "random", "count": 3}},
     "std must be >= 0"),
    ({"paint": {"color": {"choice": ["red", "blue"], "weights": [1.0]}}, "design": {"kind": "random", "count": 3}},
     "paint.color.weights = [1.0]: must be 2 non-negative numbers"),
    ({"camera": {"azimuth": {"uniform": [90.0, 0.0]}}, "design": {"kind": "random", "count": 3}}, "needs lo <= hi"),
])
def test_each_kind_of_problem_has_one_clear_line(data, needle):
    problems = problems_of(data)
    assert len(problems) == 1, problems
    assert needle in problems[0], problems[0]


def test_schema_version_is_checked():
    with pytest.raises(SpecError, match="schema: missing; write `schema = 1`"):
        parse_spec({})
    with pytest.raises(SpecError, match="schema = 2: unsupported schema version \\(written for a newer carprobe\\)"):
        parse_spec({"schema": 2})


def test_every_problem_is_collected_in_one_error():
    with pytest.raises(SpecError) as info:
        parse_spec({"schema": 1, "camera": {"azimth": 1.0, "elevation": 200.0},
                    "paint": {"color": "nope"}, "render": {"engine": "povray"}}, source="bad.toml")
    assert len(info.value.problems) == 4
    message = str(info.value)
    assert message.startswith("bad.toml: 4 problem(s):")
    assert all(f"  - {p}" in message for p in info.value.problems)


def test_relative_files_resolve_against_the_spec_folder_then_assets(tmp_path):
    (tmp_path / "mine.glb").write_bytes(b"glTF")
    spec = parse_spec({"schema": 1, "car": {"body": "model", "model_file": "mine.glb"},
                       "lighting": {"kind": "hdri", "hdri": "hdri/city.exr"}}, tmp_path)
    assert spec.resolve_file("car.model_file", "mine.glb") == (tmp_path / "mine.glb").resolve()
    assert spec.resolve_file("lighting.hdri", "hdri/city.exr") == (REPO / "assets/hdri/city.exr").resolve()
    assert spec.resolve_file("lighting.hdri", "").parent == REPO / "assets" / "hdri"
    assert spec.resolve_file("background.image", "") is None


def test_load_spec_reports_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(CarprobeError, match="not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\nname = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


@pytest.mark.parametrize("text, needle", [
    ("schema = 1\n[render]\nwidth = " + "9" * 5000 + "\n", "a number too long to read"),
    ("schema = 1\n[render]\nwidth = " + "9" * 4000 + "\n", "render.width = 9999"),
    ("schema = 1\n[camera]\nazimuth = " + "9" * 400 + "\n", "camera.azimuth = 9999"),
    ("schema = 1\nx = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("schema = 1\nx = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
], ids=["5000-digit int", "4000-digit int", "400-digit float param", "deep arrays", "deep tables"])
def test_pathological_toml_is_a_spec_error_not_a_crash(tmp_path, text, needle):
    path = tmp_path / "evil.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=needle):
        load_spec(path)


def test_a_folder_given_as_the_spec_says_so(tmp_path):
    with pytest.raises(CarprobeError, match="is a folder"):
        load_spec(tmp_path)


@pytest.mark.parametrize("path", SCENES, ids=lambda p: p.stem)
def test_to_toml_and_to_dict_round_trip_losslessly(path):
    spec = load_spec(path)
    again = parse_spec(tomllib.loads(spec.to_toml()), path.parent)
    assert again == spec and again.hash == spec.hash
    assert parse_spec(spec.to_dict(), path.parent) == spec
    # the resolved form is itself a valid spec with the same hash (render sets store it)
    assert parse_spec(spec.resolved(), check_files=False).hash == spec.hash


def test_hash_ignores_name_and_spelling_but_not_content():
    a = parse_spec({"schema": 1, "name": "a", "camera": {"azimuth": {"range": [0, 90, 45]}}})
    b = parse_spec({"schema": 1, "name": "b", "camera": {"azimuth": {"values": [0.0, 45.0, 90.0]}}})
    c = parse_spec({"schema": 1, "camera": {"azimuth": {"values": [0.0, 45.0, 90.0]}, "elevation": 16.0}})
    assert a.hash == b.hash != c.hash
    assert len(a.hash) == 64


def test_toml_writer_escapes_strings_and_writes_every_value_type():
    data = {"schema": 1, "name": 'quote " and \\ backslash\nnewline',
            "camera": {"azimuth": {"values": [1e-07, 2.5]}}, "background": {"ground": False}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_range_expands_with_inclusive_stop_and_clean_decimals():
    spec = parse_spec({"schema": 1, "camera": {"elevation": {"range": [0.0, 0.9, 0.3]}}})
    assert spec.factor("camera.elevation").values == (0.0, 0.3, 0.6, 0.9)
    spec = parse_spec({"schema": 1, "car": {"shape_seed": {"range": [0, 9, 4]}}})
    assert spec.factor("car.shape_seed").values == (0, 4, 8)


def test_hsv_form_is_the_product_of_components_and_base_defaults_to_the_first():
    spec = parse_spec({"schema": 1, "paint": {"color": {"hsv": [[0.0, 0.5], [1.0], [0.5, 1.0]]}}})
    factor = spec.factor("paint.color")
    assert factor.values == ("hsv(0.0,1.0,0.5)", "hsv(0.0,1.0,1.0)", "hsv(0.5,1.0,0.5)", "hsv(0.5,1.0,1.0)")
    assert factor.base == "hsv(0.0,1.0,0.5)"


def test_colour_strings():
    assert parse_color(" Red ").text == "red"
    assert parse_color("#FF8000").rgb == (1.0, 128 / 255, 0.0)
    assert parse_color("rgb(1, 0.5, 0)").text == "rgb(1.0,0.5,0.0)"
    hsv = parse_color("hsv(0.5, 1, 1)")
    assert hsv.hsv == (0.5, 1.0, 1.0) and hsv.rgb == (0.0, 1.0, 1.0)
    assert parse_color("#ffffff").linear == (1.0, 1.0, 1.0)
    assert srgb_to_linear(0.5) == pytest.approx(0.21404, abs=1e-5)
    assert linear_to_srgb(srgb_to_linear(0.3)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="allowed"):
        parse_color("hsv(a,b,c)")


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_command_prints_summary(tmp_path, capsys):
    # 2 bodies x (3 colours + 2 azimuths), each subset repeated per body: 10 samples
    spec = tmp_path / "small.toml"
    spec.write_text('schema = 1\nname = "small"\n[design]\nkind = "one_at_a_time"\nacross = ["car.body"]\n'
                    '[car]\nbody = { values = ["sedan", "suv"] }\n'
                    '[paint]\ncolor = { values = ["red", "blue", "white"] }\n'
                    '[camera]\nazimuth = { values = [0.0, 90.0] }\n')
    code, out, _ = run_cli(["validate", str(spec)], capsys)
    assert code == 0
    assert "spec: small (valid)" in out and "samples: 10" in out
    assert "design: one_at_a_time (across car.body)" in out
    assert "  paint.color: 3 values" in out and "  camera.azimuth: 2 values" in out


def test_validate_command_exits_2_with_every_problem_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\n[camera]\nazimth = 3.0\nelevation = 100.0\n[paint]\ncolor = "nope"\n')
    code, out, err = run_cli(["validate", str(bad)], capsys)
    assert code == 2
    assert "3 problem(s)" in err and "camera.azimth" in err and "camera.elevation" in err and "paint.color" in err
    assert "Traceback" not in err


def test_schema_command_lists_every_parameter(capsys):
    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0
    assert all(p.path in out for p in schema.PARAMS)
