"""Procedural car shapes (bpy-free): ranges, geometry rules, determinism, distinct identities."""

import itertools
import math

import pytest

from blender_addon.core import cars
from blender_addon.core.errors import CarprobeError
from blender_addon.core.schema import BODY_TYPES

SEEDS = range(40)
ALL = [(b, s) for b in BODY_TYPES for s in SEEDS]


@pytest.fixture(scope="module")
def shapes():
    return {(b, s): cars.car_shape(b, s) for b, s in ALL}


def test_dimensions_in_realistic_ranges(shapes):
    for (body, seed), c in shapes.items():
        assert 3.4 <= c.length <= 6.0, (body, seed, c.length)
        assert 1.6 <= c.width <= 2.15, (body, seed, c.width)
        assert 1.15 <= c.height <= 2.25, (body, seed, c.height)
        assert 0.5 * c.length <= c.wheelbase <= 0.7 * c.length
        assert 0.26 <= c.wheel_radius <= 0.45
        assert 0.08 <= c.ground_clearance <= 0.35
        assert math.isclose(c.front_overhang + c.wheelbase + c.rear_overhang, c.length)
        assert c.ground_clearance < c.belt_height < c.height
        assert c.windscreen_base < c.roof_front < c.roof_rear <= c.rear_glass_base <= c.length


def test_type_means_differ_as_the_types_do(shapes):
    def mean(body, attr):
        return sum(getattr(shapes[body, s], attr) for s in SEEDS) / len(SEEDS)
    assert mean("van", "height") > mean("suv", "height") > mean("sedan", "height") > mean("coupe", "height")
    assert mean("hatchback", "length") < mean("sedan", "length") < mean("pickup", "length")
    assert mean("van", "windscreen_rake") > mean("sedan", "windscreen_rake")
    assert mean("wagon", "rear_rake") > 2 * mean("sedan", "rear_rake")
    assert all(shapes["pickup", s].bed for s in SEEDS) and not any(shapes["sedan", s].bed for s in SEEDS)


def test_wheels_sit_inside_their_arches_and_on_the_ground(shapes):
    for (body, seed), c in shapes.items():
        for x, y, z in c.wheel_centres():
            assert math.isclose(z, c.wheel_radius)  # tyre touches the ground, no lower
            assert abs(x) + c.wheel_width / 2 <= c.width / 2 + 1e-9  # inside the body's width
            s = y + c.length / 2
            assert c.arch_radius < s < c.length - c.arch_radius  # within the body's length
            # Underside of the body clears the tyre everywhere over the wheel.
            for i in range(-20, 21):
                ds = c.wheel_radius * i / 20
                tyre_top = z + math.sqrt(max(0.0, c.wheel_radius ** 2 - ds ** 2))
                assert cars.body_bottom(c, s + ds) >= tyre_top + 0.02, (body, seed, ds)
        axles = sorted({round(y, 9) for _, y, _ in c.wheel_centres()})
        assert math.isclose(axles[1] - axles[0], c.wheelbase)
        assert cars.min_arch_skin(c) >= cars.MIN_ARCH_SKIN - 1e-9  # body left above the arches


def test_nothing_below_the_ground_and_profiles_consistent(shapes):
    for (body, seed), c in shapes.items():
        for s, zb, zt, w in cars.body_stations(c):
            assert zb >= c.ground_clearance - 1e-9 and zt > zb + 0.05 and 0 < w <= c.width / 2 + 1e-9
        stations = cars.greenhouse_stations(c)
        ss = [st[0] for st in stations]
        assert ss == sorted(ss)
        for s, sill, rail, w_sill, w_rail, side in stations:
            assert rail > sill and 0 < w_rail <= w_sill < c.width / 2
            assert rail <= c.height + 1e-9
        assert max(st[2] for st in stations) + c.roof_crown == pytest.approx(c.height, abs=0.04)


def test_same_identity_same_car_and_ids():
    assert cars.car_shape("suv", 7) == cars.car_shape("suv", 7)
    assert cars.car_shape("suv", 7).car_id == cars.car_id("suv", 7) == "suv-0007"
    assert cars.car_shape("suv", 7) != cars.car_shape("suv", 8)


def _features(c):
    return (c.length, c.width, c.height, c.wheelbase, c.wheel_radius, c.belt_height, c.windscreen_rake / 30,
            c.rear_rake / 30, c.roof_front / c.length, c.roof_rear / c.length, c.ground_clearance)


def test_fifty_identities_per_type_are_visibly_distinct():
    # Visibly distinct: some dimension differs by at least 4 cm (or 4 % of a rake), which
    # is a few pixels at 224 px for a car filling the frame.
    for body in BODY_TYPES:
        feats = [_features(cars.car_shape(body, s)) for s in range(50)]
        for a, b in itertools.combinations(range(50), 2):
            assert max(abs(x - y) for x, y in zip(feats[a], feats[b])) >= 0.04, (body, a, b)


def test_overrides_set_dimensions_and_keep_rules():
    base = cars.car_shape("sedan", 3)
    c = cars.car_shape("sedan", 3, {"car.length": 5.2, "car.width": 1.95, "car.height": 1.6})
    assert (c.length, c.width) == (5.2, 1.95) and c.height == pytest.approx(1.6)
    assert c.wheelbase / c.length == pytest.approx(base.wheelbase / base.length)
    assert cars.car_shape("sedan", 3, {"length": 0, "width": 0, "height": 0}) == base
    big = cars.car_shape("sedan", 3, {"wheel_scale": 1.5})
    assert big.wheel_radius == pytest.approx(1.5 * base.wheel_radius)
    assert cars.min_arch_skin(big) >= cars.MIN_ARCH_SKIN - 1e-9  # the body rides higher instead
    assert big.ground_clearance > base.ground_clearance
    small = cars.car_shape("van", 1, {"wheel_scale": 0.5})
    assert small.wheel_radius == pytest.approx(0.5 * cars.car_shape("van", 1).wheel_radius)


def test_impossible_overrides_and_bodies_raise_named_errors():
    with pytest.raises(CarprobeError, match="car.height"):
        cars.car_shape("suv", 0, {"height": 0.6})
    with pytest.raises(CarprobeError, match="car.length"):
        cars.car_shape("sedan", 0, {"length": 1.5})
    with pytest.raises(CarprobeError, match="car.body.*sedan"):
        cars.car_shape("tank", 0)
