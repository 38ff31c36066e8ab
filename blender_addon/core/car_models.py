"""Car model files: the shipped realistic models and the parts of any model's materials. No bpy.

Shipped models live in assets/cars/ (`<id>.glb`), listed in assets/cars/cars.toml with the
material the paint factor drives, the yaw that turns them to face -y (carprobe's front) and
their real length; a spec selects one with `car.body = "<id>"` like a procedural body.
The files are made by assets/cars/convert.py; credits are in assets/cars/ATTRIBUTION.md.

Any model's materials are told apart by name (`part_of_material`): the same rules decide the
mask part in Blender (blender/scene.py) and the warnings of `carprobe validate`, which reads
the material names of .glb/.gltf/.obj files without Blender (`material_names`).
"""

from __future__ import annotations

import json
import re
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import CarprobeError

CARS_DIR = Path(__file__).resolve().parents[2] / "assets" / "cars"
MANIFEST = CARS_DIR / "cars.toml"

# Material name words -> mask part, checked in this order (first match wins; no match = body).
# A word matches anywhere in the name; "=word" only a whole word (so "rim" is not in "trim").
# Lights before glass: "GLASS_headlights" is a lamp. Wheels cover English and Spanish words.
# A name that starts with a part and ":" ("trim:window_mirror") is that part, whatever its words.
PART_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lights", ("light", "lamp", "faro")),
    ("wheels", ("tyre", "tire", "wheel", "=rim", "=rims", "rubber", "tread", "neumatico", "llanta")),
    ("glass", ("glass", "window", "windshield", "windscreen", "cristal")),
    ("trim", ("trim", "grille", "grill", "bumper", "chrome", "plastic")),
)


MODEL_PARTS = ("body", "glass", "wheels", "lights", "trim")
_UNACCENT = str.maketrans("áéíóúñ", "aeioun")


@dataclass(frozen=True)
class ShippedCar:
    id: str
    file: Path
    paint_material: str
    yaw: float      # degrees about z that turn the file's model to face -y
    length: float   # metres
    style: str


def _load_manifest() -> dict[str, ShippedCar]:
    if not MANIFEST.is_file():
        return {}
    with MANIFEST.open("rb") as fh:
        data = tomllib.load(fh)
    return {key: ShippedCar(key, CARS_DIR / str(d["file"]), str(d["paint_material"]), float(d["yaw"]),
                            float(d["length"]), str(d.get("style", ""))) for key, d in data.items()}


SHIPPED: dict[str, ShippedCar] = _load_manifest()
SHIPPED_IDS: tuple[str, ...] = tuple(SHIPPED)


def part_of_material(name: str) -> str:
    """Mask part of a model material from its name (see PART_WORDS); accents are ignored."""
    low = name.lower().translate(_UNACCENT)
    prefix = re.match(r"([a-z]+):", low)
    if prefix and prefix.group(1) in MODEL_PARTS:
        return prefix.group(1)
    tokens = set(re.split(r"[^a-z]+", low))
    for part, words in PART_WORDS:
        if any((w[1:] in tokens) if w.startswith("=") else (w in low) for w in words):
            return part
    return "body"


def material_names(path: str | Path) -> list[str] | None:
    """Material names of a .glb/.gltf/.obj model file (None for formats read only by Blender).

    Raises CarprobeError when the file cannot be read as its suffix says.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".glb":
            return _gltf_materials(_glb_json(path.read_bytes()))
        if suffix == ".gltf":
            return _gltf_materials(json.loads(path.read_text(encoding="utf-8")))
        if suffix == ".obj":
            return _obj_materials(path)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise CarprobeError(f"car.model_file: cannot read {path}: {exc}") from None
    return None


def _glb_json(data: bytes) -> dict:
    magic, _version, _length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF":
        raise ValueError("not a binary glTF (no 'glTF' header)")
    chunk_len, chunk_type = struct.unpack_from("<I4s", data, 12)
    if chunk_type != b"JSON":
        raise ValueError("first chunk is not JSON")
    return json.loads(data[20:20 + chunk_len].decode("utf-8"))


def _gltf_materials(doc: dict) -> list[str]:
    return [str(m.get("name", f"material_{i}")) for i, m in enumerate(doc.get("materials", []))]


def _obj_materials(path: Path) -> list[str]:
    """Materials an OBJ uses (`usemtl`), in order of first use."""
    names: list[str] = []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = re.match(r"\s*usemtl\s+(.+?)\s*$", line)
            if m and m.group(1) not in names:
                names.append(m.group(1))
    return names


def shipped_car(body: str) -> ShippedCar | None:
    return SHIPPED.get(body)


def model_source(row: dict, spec) -> tuple[Path, str, float, float] | None:
    """(file, paint material, yaw in degrees, length in m; 0 = as the file is) of the model a
    metadata row renders: a shipped model (car.body = its id) or the user's (car.body = 'model',
    car.model_file resolved like core.spec.Spec.resolve_file); None for a procedural body.
    Raises CarprobeError for a missing file."""
    body = row["car.body"]
    yaw = float(row.get("car.model_yaw") or 0.0)
    length = float(row.get("car.length") or 0.0)
    shipped = SHIPPED.get(body)
    if shipped is not None:
        if not shipped.file.is_file():
            raise CarprobeError(f"car.body: the shipped model file {shipped.file} is missing; reinstall carprobe "
                                f"or pick another body")
        return shipped.file, shipped.paint_material, shipped.yaw + yaw, length or shipped.length
    if body != "model":
        return None
    from .spec import require_file  # spec -> schema -> car_models: imported at call time

    found = require_file(spec, "car.model_file", str(row.get("car.model_file") or ""))
    return found, str(row.get("car.paint_material") or "Paint"), yaw, length


def model_warnings(path: str | Path, paint_material: str) -> list[str]:
    """Warnings about a model whose materials leave the paint factor or the wheels part empty."""
    names = material_names(path)
    if names is None:
        return []
    out = []
    if not any(n == paint_material or n.rsplit(".", 1)[0] == paint_material for n in names):
        out.append(f"car.paint_material: no material named {paint_material!r} in {path}: the paint factor "
                   f"would change nothing (rendering stops with an error); its materials: "
                   f"{', '.join(names) or 'none'}")
    if not any(part_of_material(n) == "wheels" for n in names):
        words = ", ".join(w.lstrip("=") for part, ws in PART_WORDS if part == "wheels" for w in ws)
        out.append(f"car.model_file: no material of {path} is matched to the wheels (names containing "
                   f"{words}): wheels count as body in the masks")
    return out


def spec_model_warnings(spec) -> list[str]:
    """model_warnings for every user model file and paint material a spec (core.spec.Spec) may use."""
    if "model" not in spec.factor("car.body").possible_values:
        return []
    out = []
    for value in spec.factor("car.model_file").possible_values:
        path = spec.resolve_file("car.model_file", str(value)) if value else None
        if path is None:
            continue  # a missing file is a spec problem, reported by the parser
        for paint in spec.factor("car.paint_material").possible_values:
            out += [w for w in model_warnings(path, str(paint or "Paint")) if w not in out]
    return out
