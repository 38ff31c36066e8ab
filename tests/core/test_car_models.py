"""Shipped car models (manifest, files, credits), material part words and validate's model
warnings: all without Blender."""

from __future__ import annotations

import re
import struct
import json
from pathlib import Path

import pytest

from blender_addon import cli
from blender_addon.core import car_models, schema
from blender_addon.core.errors import CarprobeError
from blender_addon.core.sampling import car_id, sample_count, sample_row
from blender_addon.core.spec import dumps_toml, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BRANDS = ("ford", "focus", "seat", "leon", "vw", "beetle", "chevrolet", "peugeot", "renault", "scenic",
          "smart", "kator", "scopia")


@pytest.mark.parametrize("name,part", [
    ("GLASS_headlights", "lights"),      # lights are checked before glass
    ("Headlights", "lights"), ("GLASS_brake_light2", "lights"), ("faros_rojos", "lights"),
    ("black_rubber", "wheels"), ("RUBBER", "wheels"), ("RUBBER_tread", "wheels"), ("Tire_Rubber", "wheels"),
    ("tyres", "wheels"), ("neumaticos", "wheels"), ("Neumáticos", "wheels"), ("Rim", "wheels"),
    ("wheel_rim.001", "wheels"),
    ("trim_chrome", "trim"),             # "rim" only as a whole word
    ("glass", "glass"), ("cristales", "glass"), ("Windscreen", "glass"),
    ("trim:window_mirror", "trim"),      # an explicit part prefix wins over the words
    ("lights:rear:glass_red", "lights"),
    ("carPaint", "body"), ("Interior", "body"), ("primer", "body"),
])
def test_part_of_material(name, part):
    assert car_models.part_of_material(name) == part


def test_at_least_eight_shipped_models_with_neutral_ids_in_the_body_menu():
    ids = car_models.SHIPPED_IDS
    assert len(ids) >= 8
    for model in ids:
        assert re.fullmatch(r"[a-z]+_[a-z]", model), model
        assert not any(b in model for b in BRANDS)
        assert model in schema.BODY_CHOICES and model not in schema.BODY_TYPES
    assert schema.BODY_CHOICES[-1] == "model"
    total = sum(car_models.SHIPPED[m].file.stat().st_size for m in ids)
    assert total < 12e6, total  # "about 10 MB in all"


@pytest.mark.parametrize("model", car_models.SHIPPED_IDS)
def test_shipped_file_has_its_paint_and_every_part(model):
    shipped = car_models.SHIPPED[model]
    assert shipped.file == car_models.CARS_DIR / f"{model}.glb" and shipped.file.is_file()
    assert 2.0 < shipped.length < 7.0 and shipped.yaw % 90 == 0
    names = car_models.material_names(shipped.file)
    assert shipped.paint_material in names
    parts = {car_models.part_of_material(n) for n in names if n != shipped.paint_material}
    assert {"glass", "wheels"} <= parts, (model, names)
    assert car_models.model_warnings(shipped.file, shipped.paint_material) == []
    # No brand names left in what the file says about itself (materials keep the source's words).
    doc = car_models._glb_json(shipped.file.read_bytes())
    for node in doc.get("nodes", []) + doc.get("meshes", []):
        assert not any(b in node.get("name", "").lower() for b in BRANDS), node.get("name")


def test_attribution_names_every_shipped_file_with_licence_and_link():
    text = (car_models.CARS_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    readme = (ROOT / "assets" / "README.md").read_text(encoding="utf-8")
    shipped = sorted(p.name for p in car_models.CARS_DIR.iterdir() if p.suffix in (".glb", ".obj", ".gltf"))
    assert shipped == sorted(f"{m}.glb" for m in car_models.SHIPPED_IDS)
    for name in shipped:
        lines = [ln for ln in text.splitlines() if ln.startswith(f"- `{name}`: ")]
        assert len(lines) == 1, name
        credit = lines[0]
        assert "Licence: Creative Commons Attribution 3.0" in credit and "https://creativecommons.org/licenses/by/3.0" in credit
        assert credit in readme.splitlines(), name  # the same line in assets/README.md
        assert f"- `{name}` from `" in text  # the changes made to this file


def test_spec_selects_shipped_models_as_a_body_factor():
    spec = parse_spec({"schema": 1, "name": "s", "design": {"kind": "grid"},
                       "car": {"body": {"values": ["hatch_a", "sedan", "van_a"]}, "shape_seed": 3}})
    rows = [sample_row(spec, i) for i in range(sample_count(spec))]
    assert [r["car.body"] for r in rows] == ["hatch_a", "sedan", "van_a"]
    assert [car_id(r) for r in rows] == ["hatch_a", "sedan-0003", "van_a"]  # the seed shapes only procedural cars
    assert rows[0]["car.model_yaw"] == 0.0
    with pytest.raises(CarprobeError, match="car.body.*hatch_z"):
        parse_spec({"schema": 1, "name": "s", "car": {"body": "hatch_z"}})


def test_model_yaw_is_a_schema_parameter_with_bounds():
    p = schema.param("car.model_yaw")
    assert (p.kind, p.default, p.minimum, p.maximum, p.unit) == ("float", 0.0, -360.0, 360.0, "deg")
    with pytest.raises(CarprobeError, match="car.model_yaw"):
        parse_spec({"schema": 1, "name": "s", "car": {"model_yaw": 400.0}})


def _write_glb(path: Path, materials: list[str]) -> Path:
    doc = json.dumps({"asset": {"version": "2.0"}, "materials": [{"name": m} for m in materials]}).encode()
    doc += b" " * (-len(doc) % 4)
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 20 + len(doc)) + struct.pack("<I4s", len(doc), b"JSON") + doc)
    return path


def _validate(tmp_path: Path, capsys, model_file: str, paint: str = "Paint") -> tuple[int, str]:
    spec = tmp_path / "user.toml"
    spec.write_text(dumps_toml({"schema": 1, "name": "u", "design": {"kind": "grid"},
                                "car": {"body": "model", "model_file": model_file, "paint_material": paint}}))
    code = cli.main(["validate", str(spec)])
    return code, capsys.readouterr().out


def test_validate_warns_when_no_material_matches_paint_or_wheels(tmp_path, capsys):
    (tmp_path / "plain.obj").write_text("mtllib x.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl Body\nf 1 2 3\n"
                                        "usemtl black_rubber\nf 1 2 3\n")
    code, out = _validate(tmp_path, capsys, "plain.obj")
    assert code == 0
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "car.paint_material: no material named 'Paint'" in warnings[0]
    assert "Body, black_rubber" in warnings[0]  # lists what there is

    _write_glb(tmp_path / "nowheels.glb", ["Paint", "Glass", "Chrome"])
    code, out = _validate(tmp_path, capsys, "nowheels.glb")
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert code == 0 and len(warnings) == 1 and "matched to the wheels" in warnings[0]

    _write_glb(tmp_path / "good.glb", ["Lacquer", "Glass", "RUBBER_tread"])
    code, out = _validate(tmp_path, capsys, "good.glb", paint="Lacquer")
    assert code == 0 and "warning" not in out


def test_validate_reports_an_unreadable_model_with_exit_2(tmp_path, capsys):
    (tmp_path / "broken.glb").write_bytes(b"not a glb at all")
    spec = tmp_path / "user.toml"
    spec.write_text(dumps_toml({"schema": 1, "name": "u", "car": {"body": "model", "model_file": "broken.glb"}}))
    assert cli.main(["validate", str(spec)]) == 2
    assert "car.model_file: cannot read" in capsys.readouterr().err


KOBS_FACTORS = {"car.body", "camera.azimuth", "paint.color", "background.color", "camera.elevation",
                "lighting.sun_elevation", "lighting.sun_azimuth"}


def test_kobs2021_scenes_use_the_shipped_models_and_kobs_properties():
    random_spec = load_spec(ROOT / "scenes" / "kobs2021.toml")
    assert random_spec.design == "random"
    assert set(random_spec.varying_factors) == KOBS_FACTORS
    assert set(random_spec.factor("car.body").values) == set(car_models.SHIPPED_IDS)
    assert random_spec.factor("paint.color").form == "hsv" and random_spec.factor("background.color").form == "hsv"

    oat = load_spec(ROOT / "scenes" / "kobs2021_oat.toml")
    assert oat.design == "one_at_a_time" and list(oat.settings["design.across"]) == ["car.body"]
    assert set(oat.varying_factors) == KOBS_FACTORS
    for path in KOBS_FACTORS - {"car.body"}:  # the same value sets as the random design
        assert set(oat.factor(path).values) == set(random_spec.factor(path).values), path


def test_model_source_of_shipped_user_and_procedural_rows(tmp_path):
    spec = parse_spec({"schema": 1, "name": "s", "design": {"kind": "grid"},
                       "car": {"body": {"values": ["van_a", "sedan"]}, "model_yaw": 90.0}})
    shipped = car_models.SHIPPED["van_a"]
    row = sample_row(spec, 0)
    assert car_models.model_source(row, spec) == (shipped.file, "Paint", shipped.yaw + 90.0, shipped.length)
    assert car_models.model_source(dict(row, **{"car.length": 5.0}), spec)[3] == 5.0
    assert car_models.model_source(sample_row(spec, 1), spec) is None
    (tmp_path / "mine.glb").write_bytes(b"")
    user = parse_spec({"schema": 1, "name": "u", "car": {"body": "model", "model_file": "mine.glb",
                                                          "paint_material": "Lacquer"}}, tmp_path)
    assert car_models.model_source(sample_row(user, 0), user) == ((tmp_path / "mine.glb").resolve(), "Lacquer", 0.0, 0.0)
    with pytest.raises(CarprobeError, match="car.model_file: file not found: gone.glb"):
        car_models.model_source(dict(sample_row(user, 0), **{"car.model_file": "gone.glb"}), user)
