"""Sampling designs: image i of a spec is a pure function of (spec, i).

- grid: the product over every listed factor parameter (schema order, last varies fastest).
- one_at_a_time: contexts = the grid over ``design.across``; then for every other listed
  parameter f (schema order), for every context, for every value of f, one image with f at
  that value and every other parameter at its base. Column ``subset`` = f. With no listed
  parameter outside ``design.across`` the design is the contexts alone (subset "").
- random: ``design.count`` images, each parameter drawn from its distribution (lists are a
  uniform choice) with ``random.Random(per_image_seed)``.
``design.count > 0`` truncates grid / one-at-a-time designs to their first ``count`` images.

``sample_row`` never enumerates other samples: grid and one-at-a-time rows come from
mixed-radix arithmetic on the index.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
from pathlib import PurePosixPath
from typing import Any

from . import schema
from .camera import camera_pose, intrinsics, opencv_camera
from .car_models import SHIPPED_IDS
from .colors import hsv_string, parse_color
from .errors import CarprobeError
from .spec import Factor, Spec

# `mask_file_name`: Hugging Face imagefolder loads every `*_file_name` column as an image.
ROW_PREFIX = ("file_name", "index", "seed", "car_id", "subset", "mask_file_name")
COLOR_SUFFIXES = ("_r", "_g", "_b", "_h", "_s", "_v")
CAMERA_COLUMNS = ("camera.fx", "camera.fy", "camera.cx", "camera.cy",
                  "camera.location_x", "camera.location_y", "camera.location_z",
                  "camera.look_at_x", "camera.look_at_y", "camera.look_at_z", "camera.matrix_world",
                  "camera.K", "camera.Rt")
# Matrix columns: JSON text in metadata.csv, real (nested) lists in metadata.hf.jsonl.
LIST_COLUMNS = {"camera.matrix_world": (16,), "camera.K": (3, 3), "camera.Rt": (3, 4)}
# Measured from the mask after rendering (core/mask_box.py); empty without masks.
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
# Columns that always hold a value; every other one may be empty ("" in CSV, null in JSON).
NEVER_EMPTY = ("file_name", "index", "seed", "car_id")
IMAGE_SUFFIX = {"png": ".png", "jpeg": ".jpg"}
CAMERA_DIGITS = 6  # camera columns are rounded: micrometre precision, readable CSV


def image_seed(design_seed: int, index: int) -> int:
    """The per-image seed: a stable 31-bit hash of (design.seed, index) (never Python's hash())."""
    digest = hashlib.sha256(f"carprobe-image:{design_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def full_count(spec: Spec) -> int:
    """Number of images of the design before truncation by design.count."""
    kind = spec.design
    if kind == "random":
        return spec.settings["design.count"]
    if kind == "grid":
        return math.prod(len(f.values) for f in spec.listed_factors)
    contexts, subsets = _one_at_a_time_axes(spec)
    context_count = math.prod(len(f.values) for f in contexts)
    return context_count * sum(len(f.values) for f in subsets) if subsets else context_count


def sample_count(spec: Spec) -> int:
    count = spec.settings["design.count"]
    total = full_count(spec)
    return min(count, total) if count > 0 else total


def metadata_columns(spec: Spec) -> list[str]:
    """Column order of metadata.csv (and the key order of every row)."""
    columns = list(ROW_PREFIX)
    for p in schema.PARAMS:
        if p.factor:
            columns.append(p.path)
            if p.kind == "color":
                columns.extend(p.path + s for s in COLOR_SUFFIXES)
    columns.extend(CAMERA_COLUMNS)
    columns.extend(BBOX_COLUMNS)
    return columns


_KIND_TYPES = {"float": "float64", "int": "int64", "bool": "bool"}  # other kinds are text


def column_types() -> dict[str, str]:
    """The type of every metadata column: string, int64, float64, bool, or float64[shape] for a
    matrix. The same for every render set of this carprobe format version, whatever its values
    (an all-empty column stays a string column); stored in dataset.json as `column_types`."""
    types = {"file_name": "string", "index": "int64", "seed": "int64", "car_id": "string", "subset": "string",
             "mask_file_name": "string"}
    for p in schema.PARAMS:
        if p.factor:
            types[p.path] = _KIND_TYPES.get(p.kind, "string")
            if p.kind == "color":
                types.update({p.path + s: "float64" for s in COLOR_SUFFIXES})
    for column in CAMERA_COLUMNS:
        shape = LIST_COLUMNS.get(column)
        types[column] = f"float64[{','.join(map(str, shape))}]" if shape else "float64"
    types.update({c: "int64" for c in BBOX_COLUMNS})
    return types


def file_names(spec: Spec, index: int) -> tuple[str, str]:
    """(image file, mask file or '') relative to the render-set root, POSIX separators."""
    suffix = IMAGE_SUFFIX[spec.settings["render.format"]]
    image = f"images/{index:06d}{suffix}"
    mask = f"masks/{index:06d}.png" if spec.settings["render.masks"] else ""
    return image, mask


def sample_values(spec: Spec, index: int) -> tuple[dict[str, Any], str, int]:
    """(factor values by path, subset label, per-image seed) of sample `index`."""
    total = sample_count(spec)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < total:
        raise CarprobeError(f"sample index {index!r} out of range: spec {spec.name!r} has {total} "
                            f"samples (0..{total - 1})")
    seed = image_seed(spec.settings["design.seed"], index)
    values = {path: f.base for path, f in spec.factors.items()}
    subset = ""
    kind = spec.design
    if kind == "grid":
        _assign_digits(values, spec.listed_factors, index)
    elif kind == "one_at_a_time" and not _one_at_a_time_axes(spec)[1]:
        _assign_digits(values, spec.listed_factors, index)
    elif kind == "one_at_a_time":
        contexts, subsets = _one_at_a_time_axes(spec)
        context_count = math.prod(len(f.values) for f in contexts)
        ends = []
        end = 0
        for f in subsets:
            end += context_count * len(f.values)
            ends.append(end)
        which = bisect.bisect_right(ends, index)
        factor = subsets[which]
        offset = index - (ends[which - 1] if which else 0)
        context_index, value_index = divmod(offset, len(factor.values))
        _assign_digits(values, contexts, context_index)
        values[factor.path] = factor.values[value_index]
        subset = factor.path
    else:
        rng = random.Random(seed)
        for path, f in spec.factors.items():
            if f.form != "fixed":
                values[path] = _draw(f, rng)
    return values, subset, seed


def sample_row(spec: Spec, index: int) -> dict[str, Any]:
    """The metadata row of sample `index` (keys in metadata_columns order)."""
    values, subset, seed = sample_values(spec, index)
    image, mask = file_names(spec, index)
    row: dict[str, Any] = {"file_name": image, "index": index, "seed": seed,
                           "car_id": car_id(values), "subset": subset, "mask_file_name": mask}
    for p in schema.PARAMS:
        if not p.factor:
            continue
        value = values[p.path]
        row[p.path] = value
        if p.kind == "color":
            color = parse_color(value)
            for suffix, component in zip(COLOR_SUFFIXES, color.linear + color.hsv):
                row[p.path + suffix] = component
    row.update(camera_columns(values, spec.settings["render.width"], spec.settings["render.height"], seed))
    row.update(dict.fromkeys(BBOX_COLUMNS))  # measured after rendering (render_set fills them in)
    return row


def camera_columns(values: dict[str, Any], width: int, height: int, seed: int) -> dict[str, Any]:
    fx, fy, cx, cy = intrinsics(values["camera.focal_length"], width, height)
    pose = camera_pose(values["camera.azimuth"], values["camera.elevation"], values["camera.distance"],
                       values["camera.jitter"], seed)
    K, Rt = opencv_camera(pose, fx, fy, cx, cy)

    def r(x: float) -> float:
        return round(x, CAMERA_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0

    def matrix(rows) -> str:
        return json.dumps([[r(v) for v in row] for row in rows])

    return {
        "camera.fx": r(fx), "camera.fy": r(fy), "camera.cx": r(cx), "camera.cy": r(cy),
        "camera.location_x": r(pose.location[0]), "camera.location_y": r(pose.location[1]),
        "camera.location_z": r(pose.location[2]),
        "camera.look_at_x": r(pose.look_at[0]), "camera.look_at_y": r(pose.look_at[1]),
        "camera.look_at_z": r(pose.look_at[2]),
        "camera.matrix_world": json.dumps([r(v) for v in pose.flat_matrix()]),
        "camera.K": matrix(K), "camera.Rt": matrix(Rt),
    }


def car_id(values: dict[str, Any]) -> str:
    """Car identity label: '<body>-<shape seed, 4 digits>', a shipped model's id (the seed does
    not change it) or 'model-<file stem>'."""
    if values["car.body"] == "model":
        return "model-" + PurePosixPath(values["car.model_file"].replace("\\", "/")).stem
    if values["car.body"] in SHIPPED_IDS:
        return values["car.body"]
    return f"{values['car.body']}-{values['car.shape_seed']:04d}"


def _one_at_a_time_axes(spec: Spec) -> tuple[list[Factor], list[Factor]]:
    across = set(spec.settings["design.across"])
    listed = spec.listed_factors
    return [f for f in listed if f.path in across], [f for f in listed if f.path not in across]


def _assign_digits(values: dict[str, Any], axes: list[Factor], index: int) -> None:
    """Mixed-radix digits of `index` over `axes`, the last axis varying fastest."""
    for f in reversed(axes):
        index, digit = divmod(index, len(f.values))
        values[f.path] = f.values[digit]


def _draw(f: Factor, rng: random.Random) -> Any:
    kind = f.param.kind
    if f.form in ("values", "range"):
        return rng.choice(f.values)
    if f.form == "hsv":
        return hsv_string(*(rng.choice(component) for component in f.args))
    if f.form == "choice":
        if f.weights is None:
            return rng.choice(f.values)
        return rng.choices(f.values, weights=f.weights)[0]
    if f.form == "uniform":
        lo, hi = f.args
        return rng.randint(lo, hi) if kind == "int" else rng.uniform(lo, hi)
    if f.form == "normal":
        lo, hi = f.effective_clip
        x = rng.gauss(*f.args)
        x = min(max(x, lo), hi)
        return int(round(x)) if kind == "int" else x
    raise AssertionError(f"form {f.form!r} has no draw")
