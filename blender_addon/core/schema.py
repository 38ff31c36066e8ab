"""The dataset-spec schema: one declarative table of every parameter a spec can set.

This table is the single source of truth for the spec parser and validator, the sampler,
the metadata columns, the Blender UI properties and the documentation. It imports nothing
from Blender.

A spec is a TOML file with top-level keys ``schema`` and ``name``, a ``[design]`` table, a
``[render]`` table and one table per factor group (``[car]``, ``[paint]``, ``[lighting]``,
``[camera]``, ``[background]``). Settings (``design.*``, ``render.*``) are always fixed values.
Every *factor parameter* (``car.*`` … ``background.*``) is one of:

- a bare value: fixed for every image, e.g. ``azimuth = 30``;
- ``{ values = [...] }`` (optionally ``base = v``, default the first value): a list, the axis of
  a grid or of a one-factor-at-a-time subset; in a random design a uniform choice among them;
- ``{ range = [start, stop, step] }``: numeric sugar for ``values`` (stop inclusive when hit);
- ``{ hsv = [[h...], [s...], [v...]] }`` (colour parameters only): the product set of the
  three component lists, as a list (each component drawn independently in a random design);
- ``{ uniform = [lo, hi] }``, ``{ normal = [mean, std] }`` (optional ``clip = [lo, hi]``),
  ``{ choice = [...] }`` (optional ``weights = [...]``): distributions, random design only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

from .car_models import SHIPPED_IDS

BODY_TYPES = ("sedan", "hatchback", "suv", "coupe", "wagon", "van", "pickup")
# Then the realistic models shipped in assets/cars (cars.toml), then "model": a user car model
# file (car.model_file) instead of a procedural body.
BODY_CHOICES = BODY_TYPES + SHIPPED_IDS + ("model",)
MODEL_FILE_SUFFIXES = (".blend", ".glb", ".gltf", ".fbx", ".obj")

# Named paint colours, linear-ish sRGB triples in 0..1 (converted to linear in Blender).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.05, 0.05),
    "orange": (0.95, 0.45, 0.05),
    "yellow": (0.95, 0.80, 0.10),
    "green": (0.10, 0.55, 0.15),
    "teal": (0.05, 0.50, 0.50),
    "blue": (0.05, 0.20, 0.75),
    "navy": (0.03, 0.06, 0.30),
    "purple": (0.40, 0.10, 0.55),
    "pink": (0.95, 0.45, 0.65),
    "brown": (0.40, 0.22, 0.10),
    "white": (0.92, 0.92, 0.92),
    "silver": (0.65, 0.66, 0.68),
    "gray": (0.35, 0.35, 0.36),
    "black": (0.03, 0.03, 0.03),
}

DESIGN_KINDS = ("grid", "one_at_a_time", "random")
ENGINES = ("cycles", "eevee", "workbench")
IMAGE_FORMATS = ("png", "jpeg")
LIGHTING_KINDS = ("sun", "hdri", "studio")
BACKGROUND_KINDS = ("hdri", "sky", "color", "image", "transparent")
# Part ids written to masks/*.png (value = id); also stored in dataset.json.
MASK_PARTS = ("background", "body", "glass", "wheels", "lights", "trim", "ground")


@dataclass(frozen=True)
class Param:
    """One spec parameter.

    kind: "float" | "int" | "bool" | "enum" | "color" | "path" | "str" | "strlist" (settings only).
    factor: True for factor parameters (may vary), False for settings (always fixed).
    choices: allowed values for enum; for path, allowed file suffixes.
    """

    group: str
    name: str
    kind: str
    default: Any
    help: str
    factor: bool = True
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    optional: bool = False  # may be left unset ("" for path/str); the builder derives it

    @property
    def path(self) -> str:
        return f"{self.group}.{self.name}"


def _p(group: str, name: str, kind: str, default: Any, help: str, **kw: Any) -> Param:
    return Param(group, name, kind, default, help, **kw)


PARAMS: tuple[Param, ...] = (
    # --- design (settings) -----------------------------------------------------------
    _p("design", "kind", "enum", "one_at_a_time", "Sampling design", factor=False, choices=DESIGN_KINDS),
    _p("design", "count", "int", 0, "Random design: number of samples (required > 0). "
       "Grid / one-at-a-time: 0 = every combination", factor=False, minimum=0),
    _p("design", "seed", "int", 0, "Seed of the random design and of every per-image seed",
       factor=False, minimum=0),
    # one_at_a_time: without contexts every label of a subset would hold a single image, so
    # silhouettes need several contexts (e.g. car identities) gridded inside every subset.
    _p("design", "across", "strlist", (), "One-at-a-time: factor parameters gridded jointly in every "
       "subset (the contexts), e.g. ['car.shape_seed']", factor=False, optional=True),
    # --- render (settings) -----------------------------------------------------------
    _p("render", "engine", "enum", "cycles", "Render engine", factor=False, choices=ENGINES),
    _p("render", "width", "int", 224, "Image width", factor=False, minimum=8, maximum=8192, unit="px"),
    _p("render", "height", "int", 224, "Image height", factor=False, minimum=8, maximum=8192, unit="px"),
    _p("render", "samples", "int", 32, "Samples per pixel (Cycles/EEVEE)", factor=False, minimum=1, maximum=65536),
    _p("render", "denoise", "bool", False, "Denoise (Cycles, OpenImageDenoise)", factor=False),
    _p("render", "format", "enum", "png", "Image file format", factor=False, choices=IMAGE_FORMATS),
    _p("render", "masks", "bool", True, "Write per-pixel part masks", factor=False),
    # --- car ---------------------------------------------------------------------------
    _p("car", "body", "enum", "sedan", "Body: a procedural type, a shipped model (assets/cars), or 'model' for "
       "a user car model file", choices=BODY_CHOICES),
    _p("car", "shape_seed", "int", 0, "Shape seed: with the body type it fixes the car identity", minimum=0),
    _p("car", "model_file", "path", "", "User car model (body = 'model')", choices=MODEL_FILE_SUFFIXES, optional=True),
    _p("car", "paint_material", "str", "Paint", "Name of the user model's paint material", optional=True),
    _p("car", "model_yaw", "float", 0.0, "Turn of a car model about the vertical axis, for models that do not "
       "face -y (added to a shipped model's own)", minimum=-360.0, maximum=360.0, unit="deg"),
    # Shape overrides: 0 = derived from (body, shape_seed).
    _p("car", "length", "float", 0.0, "Overall length (0 = from identity)", minimum=0.0, maximum=8.0, unit="m"),
    _p("car", "width", "float", 0.0, "Overall width (0 = from identity)", minimum=0.0, maximum=3.0, unit="m"),
    _p("car", "height", "float", 0.0, "Overall height (0 = from identity)", minimum=0.0, maximum=3.5, unit="m"),
    _p("car", "wheel_scale", "float", 1.0, "Wheel size relative to the identity's", minimum=0.5, maximum=1.5),
    # --- paint -------------------------------------------------------------------------
    _p("paint", "color", "color", "red", "Paint colour: palette name, '#rrggbb', 'rgb(r,g,b)' or 'hsv(h,s,v)' (0..1)"),
    _p("paint", "metallic", "float", 0.5, "Metallic", minimum=0.0, maximum=1.0),
    _p("paint", "roughness", "float", 0.3, "Roughness", minimum=0.0, maximum=1.0),
    _p("paint", "coat", "float", 0.5, "Clear-coat weight", minimum=0.0, maximum=1.0),
    # --- lighting ----------------------------------------------------------------------
    _p("lighting", "kind", "enum", "sun", "Light setup", choices=LIGHTING_KINDS),
    _p("lighting", "sun_azimuth", "float", 45.0, "Sun azimuth", minimum=-360.0, maximum=360.0, unit="deg"),
    _p("lighting", "sun_elevation", "float", 45.0, "Sun elevation", minimum=0.0, maximum=90.0, unit="deg"),
    _p("lighting", "sun_strength", "float", 3.0, "Sun strength", minimum=0.0, maximum=100.0, unit="W/m2"),
    _p("lighting", "sky_strength", "float", 1.0, "Sky / ambient strength", minimum=0.0, maximum=100.0),
    _p("lighting", "hdri", "path", "", "HDRI file (.exr/.hdr); '' = first bundled in assets/hdri",
       choices=(".exr", ".hdr"), optional=True),
    _p("lighting", "hdri_rotation", "float", 0.0, "HDRI rotation about the vertical axis",
       minimum=-360.0, maximum=360.0, unit="deg"),
    _p("lighting", "hdri_strength", "float", 1.0, "HDRI strength", minimum=0.0, maximum=100.0),
    _p("lighting", "studio_strength", "float", 1.0, "Studio three-point rig strength (key light scale)",
       minimum=0.0, maximum=100.0),
    _p("lighting", "temperature", "float", 6500.0, "Colour temperature of the lights", minimum=1000.0,
       maximum=20000.0, unit="K"),
    # --- camera ------------------------------------------------------------------------
    _p("camera", "azimuth", "float", 30.0, "Camera azimuth around the car (0 = front)", minimum=-360.0,
       maximum=360.0, unit="deg"),
    _p("camera", "elevation", "float", 15.0, "Camera elevation", minimum=-10.0, maximum=89.0, unit="deg"),
    _p("camera", "distance", "float", 8.0, "Camera distance to the car centre", minimum=1.0, maximum=100.0, unit="m"),
    _p("camera", "focal_length", "float", 50.0, "Lens focal length (36 mm sensor)", minimum=5.0, maximum=500.0,
       unit="mm"),
    _p("camera", "jitter", "float", 0.0, "Std of the random look-at offset (per-image seed)", minimum=0.0,
       maximum=2.0, unit="m"),
    # --- background --------------------------------------------------------------------
    _p("background", "kind", "enum", "color", "What the camera sees behind the car", choices=BACKGROUND_KINDS),
    _p("background", "color", "color", "gray", "Background colour (kind = 'color')"),
    _p("background", "image", "path", "", "Background image (kind = 'image')", choices=(".png", ".jpg", ".jpeg"),
       optional=True),
    _p("background", "ground", "bool", True, "Ground plane under the car"),
)

GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in PARAMS))
SETTING_GROUPS = ("design", "render")
FACTOR_GROUPS = tuple(g for g in GROUPS if g not in SETTING_GROUPS)
PARAMS_BY_PATH: dict[str, Param] = {p.path: p for p in PARAMS}

# Variation forms a factor parameter may take instead of a bare value.
LIST_FORMS = ("values", "range", "hsv")
DISTRIBUTION_FORMS = ("uniform", "normal", "choice")
FORM_EXTRA_KEYS = {"values": ("base",), "range": ("base",), "hsv": ("base",), "uniform": (),
                   "normal": ("clip",), "choice": ("weights",)}


def param(path: str) -> Param:
    """Look up a parameter by its dotted path, e.g. ``camera.azimuth``."""
    try:
        return PARAMS_BY_PATH[path]
    except KeyError:
        raise KeyError(f"unknown spec parameter {path!r}; known: {', '.join(PARAMS_BY_PATH)}") from None


def describe_schema() -> str:
    """A plain-text table of every parameter: path, kind, default, range or choices, help."""
    out = []
    for p in PARAMS:
        allowed = ""
        if p.choices:
            allowed = " | ".join(p.choices)
        elif p.minimum is not None or p.maximum is not None:
            allowed = f"[{p.minimum}, {p.maximum}]"
        unit = f" {p.unit}" if p.unit else ""
        role = "factor" if p.factor else "setting"
        out.append(f"{p.path:28s} {p.kind:6s} {role:7s} default={p.default!r}{unit}  {allowed}  {p.help}")
    return "\n".join(out)
