"""Sampling designs, metadata rows and camera maths."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from blender_addon.core import camera, sampling, schema
from blender_addon.core.errors import CarprobeError
from blender_addon.core.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]


def spec_of(**groups):
    return parse_spec({"schema": 1, **groups})


GRID = dict(design={"kind": "grid"},
            car={"body": {"values": ["sedan", "suv"]}},
            paint={"color": {"values": ["red", "blue", "white"]}},
            camera={"azimuth": {"values": [0.0, 90.0]}})


def test_grid_is_the_product_in_schema_order_with_the_last_varying_fastest():
    spec = spec_of(**GRID)
    assert sampling.sample_count(spec) == 12
    rows = [sampling.sample_row(spec, i) for i in range(12)]
    got = [(r["car.body"], r["paint.color"], r["camera.azimuth"]) for r in rows]
    assert got == list(itertools.product(["sedan", "suv"], ["red", "blue", "white"], [0.0, 90.0]))
    assert {r["subset"] for r in rows} == {""}


def test_count_truncates_grid_and_one_at_a_time():
    spec = spec_of(**{**GRID, "design": {"kind": "grid", "count": 5}})
    assert sampling.sample_count(spec) == 5
    assert sampling.full_count(spec) == 12
    with pytest.raises(CarprobeError, match="out of range"):
        sampling.sample_row(spec, 5)


def test_one_at_a_time_varies_one_factor_per_subset_across_contexts():
    spec = spec_of(design={"kind": "one_at_a_time", "across": ["car.shape_seed"]},
                   car={"shape_seed": {"values": [0, 1, 2]}},
                   paint={"color": {"values": ["red", "blue"], "base": "blue"}},
                   camera={"azimuth": {"values": [0.0, 45.0, 90.0, 135.0], "base": 45.0},
                           "elevation": {"values": [10.0, 20.0]}})
    assert sampling.sample_count(spec) == 3 * (2 + 4 + 2)
    rows = [sampling.sample_row(spec, i) for i in range(24)]
    assert [r["subset"] for r in rows] == ["paint.color"] * 6 + ["camera.azimuth"] * 12 + ["camera.elevation"] * 6
    for r in rows:
        for path, base in (("paint.color", "blue"), ("camera.azimuth", 45.0), ("camera.elevation", 10.0)):
            if r["subset"] != path:
                assert r[path] == base
    azimuth = rows[6:18]  # for every context, for every value
    assert [(r["car.shape_seed"], r["camera.azimuth"]) for r in azimuth] == \
        list(itertools.product([0, 1, 2], [0.0, 45.0, 90.0, 135.0]))
    assert rows[0]["car_id"] == "sedan-0000" and rows[2]["car_id"] == "sedan-0001"


def test_one_at_a_time_without_other_listed_factors_is_the_contexts():
    spec = spec_of(design={"across": ["car.shape_seed"]}, car={"shape_seed": {"values": [3, 4]}})
    assert sampling.sample_count(spec) == 2
    assert [sampling.sample_row(spec, i)["car.shape_seed"] for i in range(2)] == [3, 4]
    assert sampling.sample_count(spec_of()) == 1


def test_sample_row_is_a_pure_function_of_spec_and_index():
    spec = load_spec(REPO / "scenes/paper_grid.toml")
    n = sampling.sample_count(spec)
    forward = [sampling.sample_row(spec, i) for i in range(n)]
    order = list(range(n))
    random.Random(1).shuffle(order)
    shuffled = {i: sampling.sample_row(spec, i) for i in order}
    assert [shuffled[i] for i in range(n)] == forward
    reloaded = load_spec(REPO / "scenes/paper_grid.toml")
    assert sampling.sample_row(reloaded, n - 1) == forward[-1]
    # no two images of a one-at-a-time design share (subset, every factor value)
    keys = {json.dumps([r["subset"]] + [r[p.path] for p in schema.PARAMS if p.factor]) for r in forward}
    assert len(keys) == n


def test_sample_row_does_not_enumerate_other_samples():
    # 10^12 combinations: only index arithmetic can answer this instantly
    big = {p: {"range": [0.0, 99.0, 1.0]} for p in ("sun_azimuth", "sun_strength", "sky_strength")}
    spec = spec_of(design={"kind": "grid"}, lighting=big,
                   camera={"azimuth": {"range": [0.0, 99.0, 1.0]}, "distance": {"range": [1.0, 100.0, 1.0]},
                           "focal_length": {"range": [5.0, 104.0, 1.0]}})
    assert sampling.sample_count(spec) == 100 ** 6
    row = sampling.sample_row(spec, 100 ** 6 - 1)
    assert (row["lighting.sun_azimuth"], row["camera.focal_length"]) == (99.0, 104.0)


def test_random_design_is_seeded_and_draws_within_bounds():
    data = dict(design={"kind": "random", "count": 200, "seed": 5},
                car={"body": {"choice": ["sedan", "suv"], "weights": [1.0, 3.0]}, "shape_seed": {"uniform": [0, 9]}},
                paint={"color": {"hsv": [[0.0, 0.5], [0.5, 1.0], [1.0]]}, "metallic": {"uniform": [0.2, 0.4]}},
                camera={"azimuth": {"values": [0.0, 90.0]}, "distance": {"normal": [8.0, 5.0], "clip": [6.0, 10.0]}})
    spec = spec_of(**data)
    rows = [sampling.sample_row(spec, i) for i in range(200)]
    assert rows == [sampling.sample_row(spec_of(**data), i) for i in range(200)]
    assert all(0 <= r["car.shape_seed"] <= 9 and isinstance(r["car.shape_seed"], int) for r in rows)
    assert all(0.2 <= r["paint.metallic"] <= 0.4 for r in rows)
    assert all(6.0 <= r["camera.distance"] <= 10.0 for r in rows)
    assert {r["camera.azimuth"] for r in rows} == {0.0, 90.0}
    assert {r["paint.color"] for r in rows} == {f"hsv({h},{s},1.0)" for h in (0.0, 0.5) for s in (0.5, 1.0)}
    suv_share = sum(r["car.body"] == "suv" for r in rows) / 200
    assert 0.6 < suv_share < 0.9  # weights 1:3
    other_seed = spec_of(**{**data, "design": {"kind": "random", "count": 200, "seed": 6}})
    assert [sampling.sample_row(other_seed, i)["camera.distance"] for i in range(20)] != \
        [r["camera.distance"] for r in rows[:20]]


def test_per_image_seed_is_a_stable_hash():
    # pinned: changing the derivation would silently change every rendered dataset
    assert sampling.image_seed(0, 0) == sampling.image_seed(0, 0)
    assert sampling.image_seed(0, 17) == int.from_bytes(
        __import__("hashlib").sha256(b"carprobe-image:0:17").digest()[:4], "big") & 0x7FFFFFFF
    seeds = {sampling.image_seed(3, i) for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2 ** 31 for s in seeds)


def test_row_columns_and_colour_conversions():
    spec = spec_of(paint={"color": "hsv(0.0,1.0,0.5)"}, render={"masks": False, "format": "jpeg"})
    row = sampling.sample_row(spec, 0)
    assert list(row) == sampling.metadata_columns(spec)
    assert row["file_name"] == "images/000000.jpg" and row["mask_file_name"] == ""
    assert (row["paint.color_h"], row["paint.color_s"], row["paint.color_v"]) == (0.0, 1.0, 0.5)
    assert row["paint.color_r"] == pytest.approx(0.21404, abs=1e-5)  # sRGB 0.5 in linear
    assert row["paint.color_g"] == 0.0
    assert sampling.metadata_columns(spec)[:6] == ["file_name", "index", "seed", "car_id", "subset", "mask_file_name"]


def test_car_id_of_user_models_uses_the_file_stem(tmp_path):
    (tmp_path / "my_car.glb").write_bytes(b"glTF")
    spec = parse_spec({"schema": 1, "car": {"body": "model", "model_file": "my_car.glb"}}, tmp_path)
    assert sampling.sample_row(spec, 0)["car_id"] == "model-my_car"


@pytest.mark.parametrize("azimuth, expected_xy", [(0.0, (0.0, -1.0)), (90.0, (1.0, 0.0)),
                                                  (180.0, (0.0, 1.0)), (270.0, (-1.0, 0.0))])
def test_camera_azimuth_convention(azimuth, expected_xy):
    pose = camera.camera_pose(azimuth, 0.0, 10.0)
    assert pose.location[0] == pytest.approx(10 * expected_xy[0], abs=1e-9)
    assert pose.location[1] == pytest.approx(10 * expected_xy[1], abs=1e-9)
    assert pose.location[2] == pytest.approx(camera.LOOK_AT_HEIGHT)


@pytest.mark.parametrize("azimuth, elevation", [(0.0, 15.0), (37.0, 60.0), (200.0, -10.0), (300.0, 89.0)])
def test_camera_matrix_is_a_rigid_look_at(azimuth, elevation):
    pose = camera.camera_pose(azimuth, elevation, 7.0)
    m = pose.matrix_world
    right, up, back = ([m[r][c] for r in range(3)] for c in range(3))
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    for a, b in ((right, up), (right, back), (up, back)):
        assert dot(a, b) == pytest.approx(0.0, abs=1e-9)
    for v in (right, up, back):
        assert dot(v, v) == pytest.approx(1.0)
    assert camera._cross(right, up) == pytest.approx(tuple(back))  # right-handed
    to_target = [t - l for t, l in zip(pose.look_at, pose.location)]
    assert dot(back, to_target) == pytest.approx(-7.0)  # the camera looks along -Z at the target
    assert right[2] == pytest.approx(0.0, abs=1e-9)  # no roll: the horizon stays level
    assert up[2] > 0
    assert m[3] == (0.0, 0.0, 0.0, 1.0)


def test_camera_jitter_moves_only_the_look_at_point_and_is_seeded():
    a = camera.camera_pose(30.0, 15.0, 8.0, jitter=0.2, seed=11)
    b = camera.camera_pose(30.0, 15.0, 8.0, jitter=0.2, seed=11)
    c = camera.camera_pose(30.0, 15.0, 8.0, jitter=0.2, seed=12)
    still = camera.camera_pose(30.0, 15.0, 8.0)
    assert a == b and a.look_at != c.look_at
    assert a.location == still.location and a.look_at != still.look_at
    assert still.look_at == (0.0, 0.0, camera.LOOK_AT_HEIGHT)


def test_intrinsics_follow_blenders_auto_sensor_fit():
    assert camera.intrinsics(50.0, 224, 224) == pytest.approx((50 / 36 * 224, 50 / 36 * 224, 112.0, 112.0))
    fx, fy, cx, cy = camera.intrinsics(36.0, 200, 100)  # landscape: sensor width spans the width
    assert (fx, fy, cx, cy) == (200.0, 200.0, 100.0, 50.0)
    fx, fy, cx, cy = camera.intrinsics(36.0, 100, 200)  # portrait: it spans the height
    assert (fx, fy) == (200.0, 200.0)


def test_row_camera_columns_match_the_pose():
    spec = spec_of(camera={"azimuth": 90.0, "elevation": 0.0, "distance": 5.0, "focal_length": 36.0},
                   render={"width": 100, "height": 50})
    row = sampling.sample_row(spec, 0)
    assert (row["camera.location_x"], row["camera.location_y"], row["camera.location_z"]) == (5.0, 0.0, 0.6)
    assert (row["camera.fx"], row["camera.cx"], row["camera.cy"]) == (100.0, 50.0, 25.0)
    matrix = json.loads(row["camera.matrix_world"])
    assert len(matrix) == 16 and matrix[3] == 5.0 and matrix[-1] == 1.0
    assert not any(math.copysign(1.0, v) < 0 and v == 0 for v in matrix)  # no "-0.0" in the CSV
