"""Spec dicts exercising every variation form of every parameter kind (GUI round-trip tests)."""

from __future__ import annotations

from pathlib import Path

from blender_addon.core import schema

REPO = Path(__file__).resolve().parents[2]
SCENES = sorted((REPO / "scenes").glob("*.toml"))


def make_files(folder: Path) -> dict[str, list[str]]:
    """Small files the path parameters point at (relative to folder): existence is checked."""
    names = {"car.model_file": ["cars/a.glb", "cars/b car, v2.obj"],
             "lighting.hdri": ["hdri/x.exr", "hdri/y.hdr"],
             "background.image": ["bg/one.png", "bg/two.jpg"]}
    for files in names.values():
        for rel in files:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(b"")
    return names


def variants(p: schema.Param, files: dict[str, list[str]]) -> list:
    """Raw values (as a user writes them) covering every form the parameter kind allows."""
    lo = p.minimum if p.minimum is not None else 0
    hi = p.maximum if p.maximum is not None else lo + 100
    if p.kind == "float":
        a, b = lo + (hi - lo) * 0.1234567891, lo + (hi - lo) * 0.75
        return [a, {"values": [b, a, (a + b) / 2]}, {"values": [a, b], "base": b},
                {"range": [lo, lo + (hi - lo) / 2, (hi - lo) / 8]}, {"range": [lo, hi, (hi - lo) / 4], "base": hi},
                {"uniform": [a, b]}, {"normal": [a, 0.5]}, {"normal": [b, 0.25], "clip": [a, b]},
                {"choice": [a, b]}, {"choice": [b, a, lo], "weights": [0.5, 0.25, 2]}]
    if p.kind == "int":
        a, b = int(lo) + 1, int(lo) + 7
        return [b, {"values": [b, a, a + 2]}, {"values": [a, b], "base": b}, {"range": [a, b + 10, 3]},
                {"range": [a, b, 2], "base": a + 2}, {"uniform": [a, b]}, {"normal": [a + 0.5, 2.25]},
                {"normal": [b, 1.5], "clip": [a, b]}, {"choice": [a, b]}, {"choice": [b, a], "weights": [3, 1]}]
    if p.kind == "color":
        return ["blue", {"values": ["red", "#00ff80", "rgb(0.1,0.2,0.3)", "hsv(0.5,1,0.25)"]},
                {"values": ["navy", "white"], "base": "white"}, {"hsv": [[0, 0.5], [1], [0.25, 0.5, 1]]},
                {"hsv": [[0.1], [0.2, 0.3], [0.4]], "base": "hsv(0.1,0.3,0.4)"},
                {"choice": ["teal", "rgb(1,0,0)"]}, {"choice": ["red", "green"], "weights": [1, 2]}]
    if p.kind == "enum":
        c = list(p.choices)
        if p.path == "car.body":
            c = [x for x in c if x != "model"]
        elif p.path == "background.kind":
            c = [x for x in c if x != "image"]
        return [c[-1], {"values": c[::-1]}, {"values": c[:2], "base": c[1]}, {"choice": c[:2]},
                {"choice": c, "weights": list(range(1, len(c) + 1))}]
    if p.kind == "bool":
        return [not p.default, {"values": [True, False]}, {"values": [False, True], "base": True},
                {"choice": [True, False], "weights": [0.9, 0.1]}]
    if p.kind == "path":
        f = files.get(p.path, [])
        return [f[0], {"values": f}, {"values": f, "base": f[1]}, {"choice": f},
                {"choice": f, "weights": [1, 0]}]
    if p.kind == "str":
        return ["Car paint", {"values": ["Paint", "Body, outer", 'say "hi"']},
                {"values": ["A", "B"], "base": "B"}, {"choice": ["true", "x"]}]
    raise AssertionError(p.kind)


def random_specs(folder: Path) -> list[dict]:
    """Random-design specs (every form is allowed there); together they cover every variant."""
    files = make_files(folder)
    per_param = {p.path: variants(p, files) for p in schema.PARAMS if p.factor}
    n = max(len(v) for v in per_param.values())
    specs = []
    for k in range(n):
        data: dict = {"schema": 1, "name": f"forms {k}", "design": {"kind": "random", "count": 5, "seed": k},
                      "render": {"engine": "workbench", "width": 64 + k, "samples": 1 + k, "masks": k % 2 == 0}}
        if k == 1:
            data["description"] = "every form, part 2"
        for path, vs in per_param.items():
            group, name = path.split(".")
            data.setdefault(group, {})[name] = vs[k % len(vs)]
        specs.append(data)
    return specs


def grid_specs() -> list[dict]:
    """Designs whose settings are not covered by random_specs (across, grid truncation)."""
    return [
        {"schema": 1, "name": "oaat", "design": {"kind": "one_at_a_time", "across": ["car.shape_seed", "car.body"]},
         "car": {"shape_seed": {"values": [1, 2]}, "body": {"values": ["suv", "van"]}},
         "camera": {"azimuth": {"range": [0, 315, 45]}, "elevation": {"values": [5, 20], "base": 20}},
         "paint": {"color": {"hsv": [[0, 0.5], [0.9], [0.8]]}}},
        {"schema": 1, "name": "grid", "design": {"kind": "grid", "count": 3},
         "camera": {"distance": {"values": [6.5, 9]}}, "render": {"format": "jpeg", "denoise": True}},
        {"schema": 1, "name": "defaults only"},
    ]
