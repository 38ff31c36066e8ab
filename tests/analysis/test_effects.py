"""Interventional factor effects (analysis.effects, `carprobe effects`): matched pairs from
metadata, exact recovery of known effects from synthetic embeddings, identity kept, the car
bootstrap, refusals, and the command's files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import cli
from analysis.commands import demo
from analysis.effects import (EFFECTS_CSV, RESPONSE_CSV, compute_effects, find_pairs, invariance, model_effects,
                              read_effects, summary_lines)
from analysis.effects.measure import CarBootstrap, interval, wilson
from analysis.effects.pairs import Pairs
from blender_addon.core import sampling
from blender_addon.core.errors import CarprobeError
from blender_addon.core.spec import load_spec, parse_spec

from tests.analysis.synthetic_set import QUICK_TOML, render_synthetic_set

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def grid_metadata(cars=4, colours=("red", "blue", "green"), azimuths=(0.0, 90.0, 180.0, 270.0)) -> pd.DataFrame:
    rows = [{"car_id": f"sedan-{c:04d}", "car.body": "sedan", "car.shape_seed": c, "paint.color": colour,
             "camera.azimuth": az, "camera.elevation": 15.0}
            for c in range(cars) for colour in colours for az in azimuths]
    return pd.DataFrame(rows)


def one_hot(values: pd.Series) -> np.ndarray:
    return pd.get_dummies(values).to_numpy(dtype=float)


def rows_of(frame: pd.DataFrame, factor: str, metric: str) -> pd.Series:
    found = frame[(frame["factor"] == factor) & (frame["metric"] == metric)]
    assert len(found) == 1, (factor, metric)
    return found.iloc[0]


# --- exact recovery ------------------------------------------------------------------------

@pytest.mark.parametrize("weight", [3.0, 0.5])
def test_synthetic_embeddings_recover_the_true_ratios_exactly(weight):
    meta = grid_metadata()
    # e = [one-hot(colour) · w, one-hot(car) · 1, 0 · view]: a colour change moves w·√2, a car change √2
    x = np.concatenate([one_hot(meta["paint.color"]) * weight, one_hot(meta["car_id"]),
                        0.0 * one_hot(meta["camera.azimuth"])], axis=1)
    plan = find_pairs(meta, ["paint.color", "camera.azimuth"])
    effects, response = compute_effects({"syn": (x, "euclidean", False)}, meta, plan, n_boot=200)
    colour, view = rows_of(effects, "paint.color", "effect_ratio"), rows_of(effects, "camera.azimuth", "effect_ratio")
    assert colour["value"] == pytest.approx(weight, abs=1e-12)
    assert (colour["ci_low"], colour["ci_high"]) == pytest.approx((weight, weight), abs=1e-12)
    assert view["value"] == 0.0 and view["ci_high"] == 0.0
    assert rows_of(effects, "car_id", "identity_distance")["value"] == pytest.approx(math.sqrt(2))
    # a repaint (w·√2) loses the car to the same-colour other car (√2) when w > 1; a turn (0) never does
    assert rows_of(effects, "paint.color", "identity_kept")["value"] == (0.0 if weight > 1 else 1.0)
    assert rows_of(effects, "camera.azimuth", "identity_kept")["value"] == 1.0
    # n = matched pairs: per car, C(3,2) colour pairs per azimuth and C(4,2) azimuth pairs per colour
    assert colour["n"] == 4 * 4 * 3 and view["n"] == 4 * 3 * 6
    assert rows_of(effects, "car_id", "identity_distance")["n"] == 12 * 6  # C(4,2) car pairs per scene
    levels = effects[effects["metric"] == "mean_distance"]
    assert set(zip(levels["level_a"], levels["level_b"])) == {("red", "blue"), ("red", "green"), ("blue", "green")}
    assert np.allclose(levels["value"], weight * math.sqrt(2))
    # azimuth is circular: 0°–270° is a 90° change, so only Δ = 90° and 180° exist
    assert sorted(response["delta"]) == [90.0, 180.0] and (response["value"] == 0).all()


def test_the_ratio_is_a_median_in_the_models_own_distance():
    meta = grid_metadata(cars=3, azimuths=(0.0,))
    position = meta["paint.color"].map({"red": 0.0, "blue": 1.0, "green": 5.0}).to_numpy()[:, None]
    x = np.concatenate([position, one_hot(meta["car_id"])], axis=1)  # colour pair distances 1, 4, 5 (+ car √2)
    plan = find_pairs(meta, ["paint.color"])
    euclidean, _ = model_effects("m", x, meta, plan, distance="euclidean", normalize=False, n_boot=10)
    assert rows_of(euclidean, "paint.color", "effect_ratio")["value"] == pytest.approx(4 / math.sqrt(2))  # median, not mean 10/3
    assert rows_of(euclidean, "paint.color", "median_distance")["value"] == pytest.approx(4.0)
    # cosine on L2-normalised embeddings: a colour change rotates by 90°, a car change by 60°
    y = np.concatenate([one_hot(meta["paint.color"]), one_hot(meta["car_id"])], axis=1)
    cosine, _ = model_effects("m", y, meta, plan, distance="cosine", normalize=True, n_boot=10)
    assert rows_of(cosine, "paint.color", "effect_ratio")["value"] == pytest.approx(0.5 / 0.5)
    dot, _ = model_effects("m", y, meta, plan, distance="dot", normalize=False, n_boot=10)
    assert rows_of(dot, "paint.color", "median_distance")["value"] == pytest.approx(1.0)  # ½‖a − b‖²


# --- identity kept -------------------------------------------------------------------------

def two_cars_two_views(positions: dict[tuple[int, float], float]):
    meta = grid_metadata(cars=2, colours=("red",), azimuths=(0.0, 90.0))
    x = np.array([[positions[(int(r["car.shape_seed"]), r["camera.azimuth"])]] for _, r in meta.iterrows()])
    plan = find_pairs(meta, ["camera.azimuth"])
    effects, _ = model_effects("m", x, meta, plan, distance="euclidean", normalize=False, n_boot=10)
    return rows_of(effects, "camera.azimuth", "identity_kept")


def test_identity_kept_rates_are_exact_on_hand_checkable_cases():
    # car 0: 0 → 1; car 1: 3 → 1.5 (1-D). Query 0 (car 0, 0°): partner at 1, nearest other car 1.5 → kept;
    # query 1 → partner 1 away, other car 0.5 away → lost; query 3 → partner 1.5, other car 2 → kept;
    # query 1.5 → partner 1.5, other car 0.5 → lost.  2 of 4 directions kept.
    row = two_cars_two_views({(0, 0.0): 0.0, (0, 90.0): 1.0, (1, 0.0): 3.0, (1, 90.0): 1.5})
    assert row["value"] == 0.5 and row["n"] == 2
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson(2, 4))
    assert wilson(2, 4) == pytest.approx((0.150039, 0.849961), abs=1e-6)  # scipy binomtest(2, 4), wilson
    # far apart cars: every direction kept; a tie with another car counts as lost (strictly nearer)
    assert two_cars_two_views({(0, 0.0): 0.0, (0, 90.0): 1.0, (1, 0.0): 10.0, (1, 90.0): 11.0})["value"] == 1.0
    tie = two_cars_two_views({(0, 0.0): 0.0, (0, 90.0): 1.0, (1, 0.0): -1.0, (1, 90.0): 20.0})
    # query 0: partner 1, other car (−1) also 1 → lost; query 1: other car 2 away → kept;
    # query −1: partner 21, other car 1 → lost; query 20: other car 19 → lost
    assert tie["value"] == 0.25


def test_wilson_interval_matches_the_formula():
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(3, 10) == pytest.approx((0.107791, 0.603222), abs=1e-6)  # scipy binomtest(3, 10), wilson
    assert all(math.isnan(v) for v in wilson(0, 0))


# --- the bootstrap resamples cars ------------------------------------------------------------

def test_duplicating_one_cars_pairs_widens_the_interval():
    meta = grid_metadata(cars=8, colours=("red", "blue"), azimuths=(0.0, 90.0, 180.0))
    rng = np.random.default_rng(1)
    shift = np.where(meta["car.shape_seed"] == 0, 4.0, 1.0 + 0.1 * rng.standard_normal(len(meta)))
    colour = np.where(meta["paint.color"] == "red", 0.0, 1.0) * shift  # car 0's repaint moves 4, others ≈ 1
    x = np.concatenate([colour[:, None], one_hot(meta["car_id"])], axis=1)
    plan = find_pairs(meta, ["paint.color"])
    before, _ = model_effects("m", x, meta, plan, distance="euclidean", normalize=False, n_boot=1000)
    pairs = plan.factors["paint.color"]
    car0 = plan.cars[pairs.first] == plan.cars[np.flatnonzero(meta["car.shape_seed"] == 0)[0]]
    plan.factors["paint.color"] = Pairs(np.r_[pairs.first, pairs.first[car0]], np.r_[pairs.second, pairs.second[car0]])
    after, _ = model_effects("m", x, meta, plan, distance="euclidean", normalize=False, n_boot=1000)
    width = lambda frame: (lambda r: r["ci_high"] - r["ci_low"])(rows_of(frame, "paint.color", "effect_ratio"))
    assert rows_of(after, "paint.color", "effect_ratio")["n"] == len(pairs) + 3
    # resampling pairs would narrow it (more pairs); resampling cars widens it (car 0 now weighs double)
    assert width(after) > 2 * width(before)


def test_bootstrap_weights_pairs_by_how_often_their_cars_are_drawn():
    boot = CarBootstrap(3, n_boot=1)
    boot.counts = np.array([[2, 1, 3]])
    # pairs: within car 0 (weight 2), within car 1 (1), across cars 0-2 (2·3 = 6), across 1-2 (1·3 = 3)
    distances = np.array([10.0, 20.0, 30.0, 1.0])
    # 1 ×3, 10 ×2, 20 ×1, 30 ×6: the 6th and 7th of 12 are 20 and 30
    assert boot.medians(distances, np.array([0, 1, 0, 1]), np.array([0, 1, 2, 2]))[0] == 25.0
    assert interval(np.array([np.nan, np.nan])) != interval(np.array([1.0, 2.0]))


# --- matched pairs from metadata -----------------------------------------------------------

def brute_force_pairs(meta: pd.DataFrame, factor: str, columns: list[str]) -> set:
    seen, rows = set(), []
    for i, row in enumerate(meta[columns].itertuples(index=False)):
        if tuple(row) not in seen:
            seen.add(tuple(row))
            rows.append(i)
    found = set()
    others = [c for c in columns if c != factor]
    for i, j in itertools.combinations(rows, 2):
        if all(meta[c].iloc[i] == meta[c].iloc[j] for c in others + ["car_id"]):
            found.add((i, j))
    return found


def test_pairs_equal_a_brute_force_scan_on_a_one_at_a_time_set():
    spec = parse_spec(__import__("tomllib").loads(QUICK_TOML), None, check_files=False)
    meta = pd.DataFrame([sampling.sample_row(spec, i) for i in range(sampling.sample_count(spec))])
    factors = ["paint.color", "camera.azimuth", "background.color"]
    plan = find_pairs(meta, factors)
    columns = [c for c in meta.columns if c in spec.factors]
    for factor in factors:
        found = {tuple(sorted(p)) for p in zip(plan.factors[factor].first, plan.factors[factor].second)}
        assert found == brute_force_pairs(meta, factor, columns), factor
    # 2 bodies × C(3,2) colours; the base image repeated in every subset counts once
    assert len(plan.factors["paint.color"]) == 6 and len(plan.factors["background.color"]) == 2
    # identity pairs: per distinct scene (1 base + 2 colours + 2 azimuths + 1 background) one sedan–suv pair
    assert len(plan.identity) == 6
    assert (plan.cars[plan.identity.first] != plan.cars[plan.identity.second]).all()


def test_sets_that_name_cars_only_in_car_id_pair_within_a_car():
    meta = grid_metadata(cars=3).drop(columns=["car.body", "car.shape_seed"])
    plan = find_pairs(meta, ["paint.color"])
    assert len(plan.factors["paint.color"]) == 3 * 4 * 3
    assert (plan.cars[plan.factors["paint.color"].first] == plan.cars[plan.factors["paint.color"].second]).all()
    assert len(plan.identity) == 12 * 3  # C(3, 2) car pairs per scene


def test_paper_grid_gives_five_car_identities_across_every_factor():
    spec = load_spec(REPO / "scenes" / "paper_grid.toml")
    meta = pd.DataFrame([sampling.sample_row(spec, i) for i in range(sampling.sample_count(spec))])
    plan = find_pairs(meta, spec.varying_factors)
    assert not plan.missing
    for factor, pairs in plan.factors.items():
        assert plan.cars_in(pairs) >= 5, factor
    assert plan.cars_in(plan.identity) >= 5


def test_factors_without_pairs_or_yardstick_are_refused():
    from analysis.effects import require_pairs

    meta = grid_metadata(cars=3)
    meta["paint.color"] = [f"c{i}" for i in range(len(meta))]  # every image its own colour: random design
    plan = find_pairs(meta, ["paint.color", "camera.azimuth"])
    assert plan.missing == ["camera.azimuth"]  # colour changes with the azimuth, never alone
    with pytest.raises(CarprobeError, match="no matched pairs for factor.*camera.azimuth"):
        require_pairs(plan)
    one_car = grid_metadata(cars=1)
    with pytest.raises(CarprobeError, match="no identity pairs"):
        require_pairs(find_pairs(one_car, ["paint.color"]))
    with pytest.raises(CarprobeError, match="'paint.colour'.*available factors"):
        find_pairs(meta, ["paint.colour"])


# --- summary -------------------------------------------------------------------------------

def effects_table(rows) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "factor": f, "level_a": "", "level_b": "", "metric": "effect_ratio",
                          "value": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "n": 10} for m, f, lo, hi in rows])


def test_invariance_names_factors_by_their_whole_interval(tmp_path):
    table = effects_table([("a", "paint.color", 0.01, 0.2), ("a", "camera.azimuth", 1.1, 1.5),
                           ("a", "lighting.kind", 0.1, 0.3), ("a", "car.body", 1.2, 1.4),
                           ("b", "paint.color", 0.9, 1.2)])
    assert invariance(table) == {"a": {"invariant": ["paint.color"], "like_car": ["camera.azimuth"]},
                                 "b": {"invariant": [], "like_car": []}}
    table.to_csv(tmp_path / EFFECTS_CSV, index=False)
    pd.DataFrame({"model": ["a"], "factor": ["paint.color"], "subset": ["paint.color"], "metric": ["silhouette"],
                  "value": [0.1]}).to_csv(tmp_path / "silhouettes.csv", index=False)
    text = demo.summary(tmp_path)
    assert "a: invariant to paint.color (effect interval < 0.25); like a change of car: camera.azimuth" in text
    assert "b: invariant to none" in text
    assert summary_lines(tmp_path / "elsewhere") == []


# --- the command ---------------------------------------------------------------------------

def test_effects_command_writes_the_tidy_table_and_figures(tmp_path, capsys):
    from tests.analysis.test_report import write_tiny_model

    render_set = render_synthetic_set(QUICK_TOML, tmp_path / "tiny")
    model = write_tiny_model(tmp_path / "tiny.pt", seed=1)
    out = tmp_path / "effects"
    argv = ["effects", str(render_set), "--models", str(model), "--out", str(out), "--quiet", "--device", "cpu",
            "--bootstrap", "100"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert ("matched pairs: car.body 6, paint.color 6, camera.azimuth 6, background.color 2; identity yardstick 6 "
            "(2 cars)") in printed
    effects = read_effects(out)
    assert list(effects.columns) == ["model", "factor", "level_a", "level_b", "metric", "value", "ci_low", "ci_high", "n"]
    ratios = effects[effects["metric"] == "effect_ratio"]
    assert set(ratios["factor"]) == {"car.body", "paint.color", "camera.azimuth", "background.color"}
    assert ratios["value"].notna().all() and (rows_of(effects, "car.body", "effect_ratio")["value"] == 1.0)
    assert ratios["ci_low"].isna().all()  # two cars: a car bootstrap has nothing to resample
    kept = effects[effects["metric"] == "identity_kept"]
    assert set(kept["factor"]) == {"paint.color", "camera.azimuth", "background.color"}  # not car.body
    assert (out / RESPONSE_CSV).is_file() and (out / "effects_bars.png").is_file()
    assert (out / "effects_levels.png").is_file() and (out / "effects_response.png").is_file()
    # a factor without pairs is refused before anything is embedded (exit 2, named)
    bad = tmp_path / "one_car.toml"
    bad.write_text(QUICK_TOML.replace('body = { values = ["sedan", "suv"] }', 'body = "sedan"')
                   .replace('across = ["car.body"]', "across = []"))
    one_car = render_synthetic_set(bad, tmp_path / "one_car")
    assert cli.main(["effects", str(one_car), "--models", str(model), "--out", str(out), "--quiet"]) == 2
    assert "no identity pairs" in capsys.readouterr().err


def test_many_cars_in_one_scene_are_paired_along_a_cycle_not_all_with_all():
    from analysis.effects.pairs import MAX_IDENTITY_PARTNERS as m

    meta = grid_metadata(cars=40, colours=("red",), azimuths=(0.0, 90.0))
    plan = find_pairs(meta, ["camera.azimuth"])
    assert len(plan.factors["camera.azimuth"]) == 40  # factor pairs stay complete
    assert len(plan.identity) == 2 * 40 * m  # per scene 40·m pairs instead of C(40, 2) = 780
    pairs = set(zip(plan.identity.first, plan.identity.second))
    assert len({tuple(sorted(p)) for p in pairs}) == len(plan.identity)  # no pair twice
    per_car = np.bincount(plan.cars[np.r_[plan.identity.first, plan.identity.second]])
    assert (per_car == 2 * 2 * m).all()  # every car in 2m pairs per scene, 2 scenes
    assert len(find_pairs(grid_metadata(cars=2 * m + 1, colours=("red",), azimuths=(0.0,)), []).identity) == \
        (2 * m + 1) * m  # up to 2m + 1 cars: every pair
    assert len(find_pairs(grid_metadata(cars=2 * m + 2, colours=("red",), azimuths=(0.0,)), []).identity) == \
        (2 * m + 2) * m  # one more: the cycle


def test_the_report_leaves_out_effects_a_design_cannot_support():
    from analysis.effects import optional_plan

    meta = grid_metadata(cars=3)
    plan, notes = optional_plan(meta, ["paint.color", "camera.azimuth"])
    assert set(plan.factors) == {"paint.color", "camera.azimuth"} and notes == []
    meta["paint.color"] = [f"c{i}" for i in range(len(meta))]  # a random design: nothing changes alone
    plan, notes = optional_plan(meta, ["paint.color", "camera.azimuth"])
    # colour still changes alone within a car and azimuth, but no two cars ever share a scene
    assert plan is None and "no matched pairs for camera.azimuth" in notes[0] and "different cars" in notes[-1]
    plan, notes = optional_plan(grid_metadata(cars=1), ["paint.color"])
    assert plan is None and "different cars" in notes[-1]


def test_continuous_changes_are_binned_and_empty_levels_are_a_level():
    meta = grid_metadata(cars=3, colours=("red", "blue"), azimuths=(0.0,))
    meta = pd.concat([meta.assign(**{"car.length": 4.0 + 0.01 * k}) for k in range(30)], ignore_index=True)
    meta.loc[meta["paint.color"] == "blue", "paint.color"] = np.nan  # e.g. an optional column left empty
    x = np.concatenate([meta[["car.length"]].to_numpy(), one_hot(meta["car_id"]),
                        meta["paint.color"].isna().to_numpy(float)[:, None]], axis=1)
    plan = find_pairs(meta, ["car.length", "paint.color"])
    effects, response = model_effects("m", x, meta, plan, distance="euclidean", normalize=False, n_boot=20)
    assert len(response) == 12 and response["n"].sum() == len(plan.factors["car.length"])  # 12 equal-width bins
    # the ratio grows with the size of the change (distance = Δlength here)
    assert response.sort_values("delta")["value"].is_monotonic_increasing
    levels = effects[effects["metric"] == "mean_distance"]
    assert list(zip(levels["level_a"], levels["level_b"])) == [("red", "")]


def test_baselines_are_recognised_from_the_model_entries():
    from analysis.effects.figures import model_roles

    entries = [{"name": "ms", "ref": "runs/ms/best.pt"}, {"name": "r18", "ref": "torchvision:resnet18"},
               {"name": "r18-random", "ref": "torchvision:resnet18", "random_init": True},
               {"name": "mine", "ref": "x.pt", "baseline": "ImageNet only"}]
    assert model_roles(entries) == {"ms": "", "r18": "ImageNet only", "r18-random": "untrained",
                                    "mine": "ImageNet only"}


def test_the_section_reads_an_effects_subfolder_of_a_results_folder(tmp_path):
    import json

    from analysis.report import write_report

    meta = grid_metadata(cars=4)
    x = np.concatenate([one_hot(meta["paint.color"]) * 3, one_hot(meta["car_id"])], axis=1)
    effects, response = compute_effects({"syn": (x, "euclidean", False)}, meta,
                                        find_pairs(meta, ["paint.color", "camera.azimuth"]), n_boot=50)
    (tmp_path / "effects").mkdir()
    effects.to_csv(tmp_path / "effects" / EFFECTS_CSV, index=False)
    response.to_csv(tmp_path / "effects" / RESPONSE_CSV, index=False)
    (tmp_path / "results.json").write_text(json.dumps({"format": "carprobe-results", "set": {"name": "s"},
                                                       "models": [{"name": "syn", "distance": "euclidean"}]}))
    html = write_report(tmp_path / "report.html", None, tmp_path).read_text(encoding="utf-8")
    section = html[html.index('id="effects"'):]
    section = section[:section.index("</section>")]
    assert "3.000 [3.000, 3.000]" in section  # colour: three times a change of car
    assert "invariant to <b>camera azimuth" in section and "like a change of car: <b>paint color" in section
    assert section.count('<img src="data:image/png;base64,') == 4  # bars, kept, levels, response


def test_distances_agree_with_the_saliency_targets_definitions():
    import torch

    from analysis.effects.measure import Geometry
    from analysis.saliency.targets import distance as reference

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 6))
    first, second = np.arange(6), np.arange(6, 12)
    a, b = torch.from_numpy(x[first]), torch.from_numpy(x[second])
    for kind in ("cosine", "euclidean", "snr"):
        expected = reference(a, b, kind)
        if kind == "snr":  # symmetric: the mean of both directions
            expected = 0.5 * (expected + reference(b, a, kind))
        got = Geometry(x, kind).pairs(first, second)
        assert np.allclose(got, expected.numpy(), atol=1e-9), kind
        assert np.allclose(Geometry(x, kind).matrix(first)[np.arange(6), second], got, atol=1e-9), kind
    assert np.allclose(Geometry(x, "dot").pairs(first, second), 0.5 * ((x[first] - x[second]) ** 2).sum(axis=1))


def test_the_demos_imagenet_and_untrained_specs_are_baselines():
    from analysis.effects.figures import model_roles

    entries = [{"name": "ns", "ref": "runs/ns/best.pt"},
               {"name": "inet", "ref": "imagenet:efficientnet_lite0:size=128"},
               {"name": "rand", "ref": "untrained:efficientnet_lite0:seed=1:size=128"}]
    assert model_roles(entries) == {"ns": "", "inet": "ImageNet only", "rand": "untrained"}
