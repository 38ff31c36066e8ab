"""The GUI's property layout, generated from ``core.schema.PARAMS``; bpy-free.

Every spec parameter becomes a handful of *fields* (future Blender properties) on the
property group of its schema group:

- settings (``design.*``, ``render.*``): one field holding the value;
- factor parameters: ``<name>_mode`` (fixed / list / range / hsv / uniform / normal / choice, as
  the schema allows for the parameter's kind) plus the fields of each mode, e.g.
  ``<name>`` (fixed value), ``<name>_values`` (a comma-separated list), ``<name>_range_start``…

``spec_to_props(data, props)`` and ``props_to_spec(props)`` convert between a spec dict (the TOML
tables, as ``Spec.to_dict()`` gives them) and any object with those attributes (the Blender
property group, or a SimpleNamespace in tests). The conversion is lossless: Blender stores
floats in single precision, so every float field has a hidden ``<field>_exact`` twin holding the
spec's own number, used for as long as the visible field still shows that number; and a hidden
``<name>_given`` flag remembers which parameters the spec wrote, so the spec written back lists
those plus every parameter changed from its default (like ``Spec.to_dict()``).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from ..core import car_models, schema
from ..core.errors import SpecError

INT_MAX = 2**31 - 1  # Blender int properties are 32-bit

# Modes a factor parameter offers, by kind, and the spec form each mode writes.
NUMERIC_MODES = ("fixed", "values", "range", "uniform", "normal", "choice")
MODES_BY_KIND = {
    "float": NUMERIC_MODES,
    "int": NUMERIC_MODES,
    "color": ("fixed", "values", "hsv", "choice"),
    "enum": ("fixed", "values", "choice"),
    "bool": ("fixed", "values", "choice"),
    "str": ("fixed", "values", "choice"),
    "path": ("fixed", "values", "choice"),
}
MODE_LABELS = {
    "fixed": ("Fixed", "One value for every image"),
    "values": ("List", "A list of values: a grid axis, a one-at-a-time subset or a random choice"),
    "range": ("Range", "start, stop, step: a list of evenly spaced values (stop included when hit)"),
    "hsv": ("HSV grid", "Every combination of the hue, saturation and value lists (0..1)"),
    "uniform": ("Uniform", "Uniform distribution between low and high (random design only)"),
    "normal": ("Normal", "Normal distribution, optionally clipped (random design only)"),
    "choice": ("Choice", "Random choice among values, optionally weighted (random design only)"),
}
BASE_MODES = ("values", "range", "hsv")

# Menu entries of enum parameters that need more than their identifier: the body menu names
# each shipped car model with its style (assets/cars/cars.toml).
ENUM_LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "car.body": {
        **{b: (b, f"Procedural {b} (identity: body and shape seed)") for b in schema.BODY_TYPES},
        **{m.id: (f"{m.id} ({m.style})", f"Shipped model assets/cars/{m.file.name}: {m.style}")
           for m in car_models.SHIPPED.values()},
        "model": ("model (your file)", "Your own car model: car.model_file, car.paint_material"),
    },
}

# Field kinds: the scalar kinds of the schema, plus "list" (comma-separated text), "mode"
# (the mode enum) and "exact" (hidden float twin).
SCALAR_KINDS = ("float", "int", "bool", "enum", "color", "path", "str")


@dataclass(frozen=True)
class Field:
    """One GUI property: its identifier, what it holds and when the panel shows it."""

    name: str
    kind: str  # "float" | "int" | "bool" | "enum" | "color" | "path" | "str" | "list" | "mode" | "exact" | "given"
    param: schema.Param
    label: str
    description: str
    modes: tuple[str, ...] = ()   # modes in which it is shown; () = always
    item_kind: str = ""           # for "list": the kind of its items
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None

    @property
    def hidden(self) -> bool:
        return self.kind in ("exact", "given")


def _label(p: schema.Param) -> str:
    text = p.name.replace("_", " ").capitalize()
    return f"{text} ({p.unit})" if p.unit else text


def _scalar_default(p: schema.Param) -> Any:
    if p.kind == "strlist":
        return ""
    return p.default


def _numeric_limits(p: schema.Param) -> tuple[float | None, float | None]:
    lo = p.minimum
    hi = p.maximum
    if p.kind == "int":
        lo = -INT_MAX if lo is None else lo
        hi = INT_MAX if hi is None else hi
    return lo, hi


def _scalar(name: str, p: schema.Param, label: str, desc: str, modes=(), default=None, kind=None,
            **kw) -> list[Field]:
    kind = kind or p.kind
    lo, hi = _numeric_limits(p)
    kw.setdefault("minimum", lo)
    kw.setdefault("maximum", hi)
    if kw["minimum"] is None and kind == "int":
        kw["minimum"] = -INT_MAX
    if kw["maximum"] is None and kind == "int":
        kw["maximum"] = INT_MAX
    default = _scalar_default(p) if default is None else default
    out = [Field(name, kind, p, label, desc, modes, default=default, **kw)]
    if kind == "float":
        out.append(Field(f"{name}_exact", "exact", p, label, "exact spec value of " + name, modes, default=""))
    return out


def _list(name: str, p: schema.Param, label: str, desc: str, modes, item_kind: str | None = None) -> Field:
    return Field(name, "list", p, label, desc, modes, item_kind=item_kind or p.kind, default="")


def param_fields(p: schema.Param) -> list[Field]:
    """Every field of one parameter, in drawing order."""
    n = p.name
    help_text = p.help + (f" [{p.unit}]" if p.unit else "")
    given = Field(f"{n}_given", "given", p, _label(p), "written in the loaded spec", default=False)
    if not p.factor:
        if p.kind == "strlist":
            return [_list(n, p, _label(p), help_text + " (comma-separated)", (), item_kind="str"), given]
        return [*_scalar(n, p, _label(p), help_text), given]
    modes = MODES_BY_KIND[p.kind]
    fields = [Field(f"{n}_mode", "mode", p, _label(p), "How this factor varies: " + help_text,
                    default="fixed"), given]
    fields += _scalar(n, p, "Value", help_text, ("fixed",))
    fields.append(_list(f"{n}_values", p, "Values", "Comma-separated values", ("values",)))
    if "range" in modes:
        # Only the start is bounded: a stop past the maximum is valid when no value reaches it.
        fields += _scalar(f"{n}_range_start", p, "Start", "First value", ("range",), default=p.default)
        fields += _scalar(f"{n}_range_stop", p, "Stop", "Last value (included when hit)", ("range",),
                          default=p.default, minimum=None, maximum=None)
        fields += _scalar(f"{n}_range_step", p, "Step", "Step between values (> 0)", ("range",),
                          default=1, minimum=0, maximum=None)
    if "hsv" in modes:
        for comp, word in (("h", "Hue"), ("s", "Saturation"), ("v", "Value")):
            fields.append(_list(f"{n}_hsv_{comp}", p, word, f"Comma-separated {word.lower()} values in 0..1",
                                ("hsv",), item_kind="float"))
    base_modes = tuple(m for m in BASE_MODES if m in modes)
    fields.append(Field(f"{n}_use_base", "bool", p, "Base", "Set the base value explicitly (default: the "
                        "first value); one-at-a-time holds a factor at its base", base_modes, default=False))
    fields += _scalar(f"{n}_base", p, "Base", "Value held while other factors vary (one-at-a-time)",
                      base_modes)
    if "uniform" in modes:
        fields += _scalar(f"{n}_uniform_lo", p, "Low", "Lower bound", ("uniform",), default=p.default)
        fields += _scalar(f"{n}_uniform_hi", p, "High", "Upper bound", ("uniform",), default=p.default)
    if "normal" in modes:
        # Mean and std are real numbers even for an integer parameter (draws are rounded).
        fields += _scalar(f"{n}_normal_mean", p, "Mean", "Mean", ("normal",), default=float(p.default),
                          kind="float", minimum=None, maximum=None)
        fields += _scalar(f"{n}_normal_std", p, "Std", "Standard deviation", ("normal",), default=0.0,
                          kind="float", minimum=0, maximum=None)
        fields.append(Field(f"{n}_use_clip", "bool", p, "Clip", "Clip draws to [low, high]", ("normal",),
                            default=False))
        fields += _scalar(f"{n}_clip_lo", p, "Clip low", "Lowest value kept", ("normal",), default=p.default)
        fields += _scalar(f"{n}_clip_hi", p, "Clip high", "Highest value kept", ("normal",), default=p.default)
    fields.append(_list(f"{n}_choice", p, "Choices", "Comma-separated values to draw from", ("choice",)))
    fields.append(_list(f"{n}_weights", p, "Weights", "Comma-separated weights, one per choice "
                        "(empty = equal)", ("choice",), item_kind="float"))
    return fields


def group_fields(group: str) -> list[Field]:
    return [f for p in schema.PARAMS if p.group == group for f in param_fields(p)]


FIELDS: dict[str, list[Field]] = {g: group_fields(g) for g in schema.GROUPS}


def visible_fields(p: schema.Param, mode: str | None) -> list[Field]:
    """The fields the panel shows for parameter p in the given mode (settings: mode None)."""
    return [f for f in param_fields(p) if not f.hidden and (not f.modes or mode in f.modes)]


# --- value <-> field conversion ---------------------------------------------------------------

def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _shortest_f32(x: float) -> float:
    """The shortest decimal that a single-precision float shows (0.30000001 -> 0.3)."""
    if not math.isfinite(x):
        return x
    target = _f32(x)
    for digits in range(1, 10):
        value = float(f"{x:.{digits}g}")
        if _f32(value) == target:
            return value
    return x


def _number_token(text: str) -> int | float:
    """A numeric literal, keeping ints as ints (so 30 stays 30, not 30.0)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _bool_token(text: str, where: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{where}: {text!r} is not a boolean (true/false)")


def split_list(text: str) -> list[str]:
    """Split 'a, "b, c", rgb(1,0,0)' on top-level commas; quoted items are JSON strings."""
    items, buf, depth, quote = [], [], 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            buf.append(ch)
        elif ch in "([":
            depth += 1
            buf.append(ch)
        elif ch in ")]":
            depth -= 1
            buf.append(ch)
        elif ch == "," and depth <= 0:
            items.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    last = "".join(buf)
    if items or last.strip():
        items.append(last)
    return [s.strip() for s in items]


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return json.loads(token)
    return token


def parse_list(text: str, item_kind: str, where: str) -> list[Any]:
    """Items of a comma-separated field as spec values; ValueError names the field."""
    out: list[Any] = []
    for token in split_list(text):
        if token == "":
            raise ValueError(f"{where}: empty item in {text!r}")
        try:
            if item_kind == "int":
                value = _number_token(_unquote(token))
                if not isinstance(value, int):
                    raise ValueError
            elif item_kind == "float":
                value = _number_token(_unquote(token))
            elif item_kind == "bool":
                value = _bool_token(_unquote(token), where)
            else:
                value = _unquote(token)
        except (ValueError, json.JSONDecodeError):
            raise ValueError(f"{where}: {token!r} is not a valid {item_kind} value") from None
        out.append(value)
    return out


def _format_item(value: Any, item_kind: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    # Bare when it reads back as itself: 'rgb(0.1,0.2,0.3)' stays bare, 'Body, outer' is quoted.
    plain = (text and text == text.strip() and not text.startswith('"')
             and text.count("(") == text.count(")") and text.count("[") == text.count("]")
             and split_list(text) == [text] and text.lower() not in ("true", "false"))
    return text if plain else json.dumps(text)


def format_list(values: list[Any], item_kind: str) -> str:
    return ", ".join(_format_item(v, item_kind) for v in values)


def _read_scalar(props, field: Field) -> Any:
    value = getattr(props, field.name)
    if field.kind == "float":
        exact = getattr(props, field.name + "_exact", "")
        if exact:
            try:
                number = _number_token(exact)
            except ValueError:
                number = None
            if number is not None and _f32(float(number)) == _f32(float(value)):
                return number
        return _shortest_f32(float(value))
    if field.kind == "int":
        return int(value)
    if field.kind == "bool":
        return bool(value)
    return str(value)


def _write_scalar(props, field: Field, value: Any, where: str) -> None:
    kind = field.kind
    if kind in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: a number expected, found {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise ValueError(f"{where}: an integer expected, found {value!r}")
        lo, hi = field.minimum, field.maximum
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{where}: {value!r} is outside the GUI range [{lo}, {hi}]")
        if kind == "float":
            setattr(props, field.name, float(value))
            setattr(props, field.name + "_exact", repr(value))
        else:
            setattr(props, field.name, value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: true or false expected, found {value!r}")
        setattr(props, field.name, value)
    elif kind == "enum":
        if value not in field.param.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(field.param.choices)}")
        setattr(props, field.name, value)
    else:
        if not isinstance(value, str):
            raise ValueError(f"{where}: a string expected, found {value!r}")
        setattr(props, field.name, value)


def _by_name(p: schema.Param) -> dict[str, Field]:
    return {f.name: f for f in param_fields(p)}


def reset_props(props) -> None:
    """Every field back to its default (what an empty spec means)."""
    props.name = "untitled"
    props.description = ""
    for group, fields in FIELDS.items():
        target = getattr(props, group)
        for f in fields:
            value = f.default
            if f.kind == "float":
                value = float(value)
            setattr(target, f.name, value)


def _list_value(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: a list expected, found {value!r}")
    return list(value)


def _write_param(target, p: schema.Param, value: Any) -> None:
    fields = _by_name(p)
    n, where = p.name, p.path
    if not p.factor:
        if p.kind == "strlist":
            target_field = fields[n]
            items = _list_value(value, where)
            if not all(isinstance(x, str) for x in items):
                raise ValueError(f"{where}: a list of strings expected, found {value!r}")
            setattr(target, target_field.name, format_list(items, "str"))
        else:
            _write_scalar(target, fields[n], value, where)
        return
    if not isinstance(value, dict):
        setattr(target, f"{n}_mode", "fixed")
        _write_scalar(target, fields[n], value, where)
        return
    forms = [k for k in value if k in schema.LIST_FORMS + schema.DISTRIBUTION_FORMS]
    if len(forms) != 1:
        raise ValueError(f"{where}: a variation table needs exactly one of "
                         f"{', '.join(schema.LIST_FORMS + schema.DISTRIBUTION_FORMS)}, found {sorted(value)}")
    form = forms[0]
    if form not in MODES_BY_KIND[p.kind]:
        raise ValueError(f"{where}: form {form!r} is not available for a {p.kind} parameter")
    extra = set(value) - {form, *schema.FORM_EXTRA_KEYS[form]}
    if extra:
        raise ValueError(f"{where}: unexpected key(s) {sorted(extra)} with {form!r}")
    setattr(target, f"{n}_mode", form)
    data = value[form]
    item_kind = p.kind if p.kind != "color" else "color"
    if form in ("values", "choice"):
        setattr(target, f"{n}_{form}", format_list(_list_value(data, where), item_kind))
    elif form == "range":
        items = _list_value(data, where)
        if len(items) != 3:
            raise ValueError(f"{where}: range = [start, stop, step] expected, found {data!r}")
        for suffix, item in zip(("start", "stop", "step"), items):
            _write_scalar(target, fields[f"{n}_range_{suffix}"], item, f"{where}.range")
    elif form == "hsv":
        comps = _list_value(data, where)
        if len(comps) != 3:
            raise ValueError(f"{where}: hsv = [[h...], [s...], [v...]] expected, found {data!r}")
        for comp, items in zip("hsv", comps):
            setattr(target, f"{n}_hsv_{comp}", format_list(_list_value(items, where), "float"))
    elif form in ("uniform", "normal"):
        items = _list_value(data, where)
        if len(items) != 2:
            raise ValueError(f"{where}: {form} = [a, b] expected, found {data!r}")
        names = ("lo", "hi") if form == "uniform" else ("mean", "std")
        for suffix, item in zip(names, items):
            _write_scalar(target, fields[f"{n}_{form}_{suffix}"], item, f"{where}.{form}")
    if "base" in value:
        setattr(target, f"{n}_use_base", True)
        _write_scalar(target, fields[f"{n}_base"], value["base"], f"{where}.base")
    if "clip" in value:
        items = _list_value(value["clip"], f"{where}.clip")
        if len(items) != 2:
            raise ValueError(f"{where}.clip: [low, high] expected, found {value['clip']!r}")
        setattr(target, f"{n}_use_clip", True)
        _write_scalar(target, fields[f"{n}_clip_lo"], items[0], f"{where}.clip")
        _write_scalar(target, fields[f"{n}_clip_hi"], items[1], f"{where}.clip")
    if "weights" in value:
        setattr(target, f"{n}_weights", format_list(_list_value(value["weights"], f"{where}.weights"), "float"))


def spec_to_props(data: dict, props) -> None:
    """Show the spec dict ``data`` (TOML tables) in ``props``; SpecError lists what cannot be shown."""
    problems = []
    known_top = {"schema", "name", "description", *schema.GROUPS}
    for key in data:
        if key not in known_top:
            problems.append(f"{key}: not a spec key the GUI knows ({', '.join(sorted(known_top))})")
    if data.get("schema", schema.SCHEMA_VERSION) != schema.SCHEMA_VERSION:
        problems.append(f"schema: version {data.get('schema')!r}; this GUI edits version {schema.SCHEMA_VERSION}")
    for group in schema.GROUPS:
        table = data.get(group, {})
        if not isinstance(table, dict):
            problems.append(f"[{group}]: a table expected, found {table!r}")
            continue
        for key in table:
            if f"{group}.{key}" not in schema.PARAMS_BY_PATH:
                problems.append(f"{group}.{key}: unknown parameter")
    if problems:
        raise SpecError(problems, "GUI")
    reset_props(props)
    if "name" in data:
        props.name = str(data["name"])
    if "description" in data:
        props.description = str(data["description"])
    for p in schema.PARAMS:
        table = data.get(p.group, {})
        if p.name in table:
            target = getattr(props, p.group)
            try:
                _write_param(target, p, table[p.name])
            except ValueError as exc:
                problems.append(str(exc))
            setattr(target, f"{p.name}_given", True)
    if problems:
        raise SpecError(problems, "GUI")


def _read_param(target, p: schema.Param) -> Any:
    fields = _by_name(p)
    n, where = p.name, p.path
    if not p.factor:
        if p.kind == "strlist":
            return parse_list(getattr(target, n), "str", where)
        return _read_scalar(target, fields[n])
    mode = getattr(target, f"{n}_mode")
    if mode == "fixed":
        return _read_scalar(target, fields[n])
    item_kind = p.kind
    out: dict[str, Any] = {}
    if mode in ("values", "choice"):
        out[mode] = parse_list(getattr(target, f"{n}_{mode}"), item_kind, f"{where}.{mode}")
    elif mode == "range":
        out["range"] = [_read_scalar(target, fields[f"{n}_range_{s}"]) for s in ("start", "stop", "step")]
    elif mode == "hsv":
        out["hsv"] = [parse_list(getattr(target, f"{n}_hsv_{c}"), "float", f"{where}.hsv.{c}") for c in "hsv"]
    elif mode == "uniform":
        out["uniform"] = [_read_scalar(target, fields[f"{n}_uniform_{s}"]) for s in ("lo", "hi")]
    elif mode == "normal":
        out["normal"] = [_read_scalar(target, fields[f"{n}_normal_{s}"]) for s in ("mean", "std")]
    else:
        raise ValueError(f"{where}: unknown mode {mode!r}")
    if mode in BASE_MODES and getattr(target, f"{n}_use_base"):
        out["base"] = _read_scalar(target, fields[f"{n}_base"])
    if mode == "normal" and getattr(target, f"{n}_use_clip"):
        out["clip"] = [_read_scalar(target, fields[f"{n}_clip_{s}"]) for s in ("lo", "hi")]
    if mode == "choice":
        weights = parse_list(getattr(target, f"{n}_weights"), "float", f"{where}.weights")
        if weights:
            out["weights"] = weights
    return out


def _is_default(p: schema.Param, value: Any) -> bool:
    default = list(p.default) if isinstance(p.default, tuple) else p.default
    return (not isinstance(value, dict) and value == default
            and isinstance(value, bool) == isinstance(default, bool))


def props_to_spec(props) -> dict:
    """The spec dict the properties show; SpecError on fields that cannot be read.

    It holds the parameters the loaded spec wrote plus every parameter whose value differs from
    the schema default. The result is checked by ``spec.parse_spec`` like any TOML file.
    """
    data: dict[str, Any] = {"schema": schema.SCHEMA_VERSION, "name": str(props.name)}
    if props.description:
        data["description"] = str(props.description)
    problems = []
    for group in schema.GROUPS:
        table: dict[str, Any] = {}
        target = getattr(props, group)
        for p in schema.PARAMS:
            if p.group != group:
                continue
            try:
                value = _read_param(target, p)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if getattr(target, f"{p.name}_given") or not _is_default(p, value):
                table[p.name] = value
        if table:
            data[group] = table
    if problems:
        raise SpecError(problems, "GUI")
    return data
