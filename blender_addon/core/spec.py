"""Dataset specs: load a TOML spec, validate it against schema.PARAMS, and write it back.

``parse_spec`` collects *every* problem of a spec and raises one ``SpecError`` with one line
per problem (field path, value, what is allowed), so a user fixes a spec in one pass.

A parsed ``Spec`` holds every setting (``design.*``, ``render.*``) as a value and every factor
parameter as a ``Factor`` (fixed value, list form or distribution). ``Spec.to_dict()`` and
``Spec.to_toml()`` give back what the user wrote (lossless: parsing them gives an equal Spec);
``Spec.resolved()`` is the canonical form with every default filled in and ranges expanded,
and ``Spec.hash`` is the sha256 of its canonical JSON (name and description excluded, since
they change neither images nor metadata).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import schema
from .colors import hsv_string, parse_color
from .errors import CarprobeError, SpecError

TOP_LEVEL_KEYS = ("schema", "name", "description") + schema.GROUPS
ALL_FORMS = schema.LIST_FORMS + schema.DISTRIBUTION_FORMS
NUMERIC_KINDS = ("int", "float")
# Which variation forms each parameter kind accepts.
FORMS_FOR_KIND = {
    "float": ("values", "range", "uniform", "normal", "choice"),
    "int": ("values", "range", "uniform", "normal", "choice"),
    "color": ("values", "hsv", "choice"),
}
DEFAULT_FORMS = ("values", "choice")

# Repository assets folder: the extension root (the repository root) holds assets/.
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
HDRI_DIR = ASSETS_DIR / "hdri"


@dataclass(frozen=True)
class Factor:
    """One factor parameter of a spec.

    form: "fixed" | "values" | "range" | "hsv" | "uniform" | "normal" | "choice".
    values: fixed → (value,); values/range/hsv → the expanded list; choice → the options.
    base: the value every other subset holds this parameter at (fixed value or list base).
    args: range (start, stop, step); hsv ((h...), (s...), (v...)); uniform (lo, hi);
          normal (mean, std).
    """

    path: str
    form: str
    values: tuple = ()
    base: Any = None
    args: tuple = ()
    clip: tuple | None = None
    weights: tuple | None = None

    @property
    def param(self) -> schema.Param:
        return schema.PARAMS_BY_PATH[self.path]

    @property
    def is_list(self) -> bool:
        return self.form in schema.LIST_FORMS

    @property
    def is_distribution(self) -> bool:
        return self.form in schema.DISTRIBUTION_FORMS

    @property
    def varies(self) -> bool:
        """True when images may differ in this parameter."""
        if self.is_list or self.form == "choice":
            return len(set(self.values)) > 1
        return self.is_distribution

    @property
    def possible_values(self) -> tuple:
        """Every value this factor can take, where the set is finite (empty otherwise)."""
        return self.values if self.form in ("fixed", "values", "range", "hsv", "choice") else ()

    def to_data(self) -> Any:
        """The form as a user writes it (bare value or variation table)."""
        if self.form == "fixed":
            return self.base
        if self.form in ("values", "range", "hsv"):
            if self.form == "values":
                first: list = list(self.values)
            elif self.form == "range":
                first = list(self.args)
            else:
                first = [list(c) for c in self.args]
            data: dict[str, Any] = {self.form: first}
            if self.base != self.values[0]:
                data["base"] = self.base
            return data
        if self.form == "uniform":
            return {"uniform": list(self.args)}
        if self.form == "normal":
            data = {"normal": list(self.args)}
            if self.clip is not None:
                data["clip"] = list(self.clip)
            return data
        data = {"choice": list(self.values)}
        if self.weights is not None:
            data["weights"] = list(self.weights)
        return data

    def resolved(self) -> Any:
        """Canonical form: ranges expanded to values, base and normal clip always present."""
        if self.form == "fixed":
            return self.base
        if self.form in ("values", "range"):
            return {"values": list(self.values), "base": self.base}
        if self.form == "hsv":
            return {"hsv": [list(c) for c in self.args], "base": self.base}
        if self.form == "normal":
            clip = self.effective_clip
            if not all(math.isfinite(c) for c in clip):
                return self.to_data()  # an open schema range: JSON has no infinity
            cast = int if self.param.kind == "int" else float
            return {"normal": list(self.args), "clip": [cast(c) for c in clip]}
        return self.to_data()

    @property
    def effective_clip(self) -> tuple[float, float]:
        """Normal draws are clipped to `clip`, else to the parameter's schema range."""
        if self.clip is not None:
            return self.clip
        p = self.param
        lo = p.minimum if p.minimum is not None else -math.inf
        hi = p.maximum if p.maximum is not None else math.inf
        return (lo, hi)


@dataclass(frozen=True)
class Spec:
    name: str
    settings: dict[str, Any]  # every design.* / render.* path → value
    factors: dict[str, Factor]  # every factor parameter path → Factor
    explicit: tuple[str, ...] = ()  # paths the user wrote, schema order
    description: str = ""
    schema_version: int = schema.SCHEMA_VERSION
    source_dir: Path | None = field(default=None, compare=False)

    # --- access -------------------------------------------------------------------
    def setting(self, path: str) -> Any:
        return self.settings[path]

    def factor(self, path: str) -> Factor:
        return self.factors[path]

    @property
    def design(self) -> str:
        return self.settings["design.kind"]

    @property
    def listed_factors(self) -> list[Factor]:
        """Factors given as a list (values / range / hsv), schema order."""
        return [f for f in self.factors.values() if f.is_list]

    @property
    def varying_factors(self) -> list[str]:
        """Paths of the factor parameters that may differ between images, schema order."""
        return [path for path, f in self.factors.items() if f.varies]

    def resolve_file(self, param_path: str, value: str) -> Path | None:
        """Absolute file of a path parameter's value (as written in the spec or a row).

        Relative paths resolve against the spec's folder, then the repository's assets/.
        '' for lighting.hdri means the first bundled HDRI (sorted by name). None when unset.
        """
        if value == "":
            if param_path == "lighting.hdri":
                return first_bundled_hdri()
            return None
        return _find_file(value, self.source_dir)

    # --- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": self.schema_version, "name": self.name}
        if self.description:
            data["description"] = self.description
        for path in self.explicit:
            group, name = path.split(".", 1)
            value = self.factors[path].to_data() if path in self.factors else self.settings[path]
            data.setdefault(group, {})[name] = _plain(value)
        return data

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())

    def resolved(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": self.schema_version, "name": self.name,
                                "description": self.description}
        for p in schema.PARAMS:
            value = self.factors[p.path].resolved() if p.factor else self.settings[p.path]
            data.setdefault(p.group, {})[p.name] = _plain(value)
        return data

    @cached_property
    def hash(self) -> str:
        content = {k: v for k, v in self.resolved().items() if k not in ("name", "description")}
        return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively (JSON/TOML friendly)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- loading and validation -------------------------------------------------------------

def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file (raises SpecError listing every problem)."""
    path = Path(path)
    if path.is_dir():
        raise CarprobeError(f"spec {str(path)!r} is a folder; give a TOML dataset spec file (e.g. scenes/quick.toml)")
    if not path.is_file():
        raise CarprobeError(f"spec file {str(path)!r} not found (expected a TOML dataset spec)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError([f"not valid TOML: {exc}"], source=str(path)) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        reason = str(exc).split(";")[0]  # drop Python's advice to raise its limit
        raise SpecError([f"not a usable TOML spec: a number too long to read ({reason})"], source=str(path)) from None
    except RecursionError:
        raise SpecError(["not a usable TOML spec: arrays or tables nested too deeply (a spec nests "
                         "at most a few levels)"], source=str(path)) from None
    return parse_spec(data, path.resolve().parent, source=str(path), default_name=path.stem)


def parse_spec(data: dict[str, Any], source_dir: str | Path | None = None, *, source: str = "spec",
               default_name: str = "unnamed", check_files: bool = True) -> Spec:
    """Validate a spec given as a dict (e.g. from tomllib); raises SpecError with every problem.

    check_files=False skips the existence check of path parameters (used when re-reading the
    resolved spec stored in a render set on another machine).
    """
    source_dir = Path(source_dir) if source_dir is not None else None
    problems = _Problems()
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a table of groups"], source=source)

    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.add(key, data[key], f"unknown top-level key{_suggest(key, TOP_LEVEL_KEYS)}; "
                         f"allowed: {', '.join(TOP_LEVEL_KEYS)}")

    version = data.get("schema")
    if "schema" not in data:
        problems.add("schema", None, f"missing; write `schema = {schema.SCHEMA_VERSION}` at the top")
    elif type(version) is not int:
        problems.add("schema", version, f"must be the integer {schema.SCHEMA_VERSION}")
    elif version != schema.SCHEMA_VERSION:
        newer = " (written for a newer carprobe)" if version > schema.SCHEMA_VERSION else ""
        problems.add("schema", version, f"unsupported schema version{newer}; this carprobe reads "
                     f"schema {schema.SCHEMA_VERSION}")
        version = schema.SCHEMA_VERSION

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        problems.add("name", name, "must be a non-empty string")
        name = default_name
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.add("description", description, "must be a string")
        description = ""

    checker = _Checker(problems, source_dir, check_files)
    settings: dict[str, Any] = {}
    factors: dict[str, Factor] = {}
    explicit: list[str] = []
    given: dict[str, Any] = {}
    for group in schema.GROUPS:
        table = data.get(group, {})
        if not isinstance(table, dict):
            problems.add(group, table, f"must be a table ([{group}]) of parameters")
            continue
        names = [p.name for p in schema.PARAMS if p.group == group]
        for key, value in table.items():
            if key in names:
                given[f"{group}.{key}"] = value
                continue
            elsewhere = [p.path for p in schema.PARAMS if p.name == key]
            hint = (f" (did you mean {' or '.join(elsewhere)}?)" if elsewhere
                    else _suggest(key, names))
            problems.add(f"{group}.{key}", value, f"unknown parameter{hint}; allowed in [{group}]: "
                         f"{', '.join(names)}")

    for p in schema.PARAMS:
        if p.path in given:
            explicit.append(p.path)
        raw = given.get(p.path, p.default)
        if p.factor:
            factors[p.path] = checker.factor(p, raw, given=p.path in given)
        else:
            settings[p.path] = checker.setting(p, raw)

    spec = Spec(name=name, settings=settings, factors=factors, explicit=tuple(explicit),
                description=description, schema_version=version if type(version) is int else 1,
                source_dir=source_dir)
    _check_design(spec, problems)
    _check_dependencies(spec, problems, check_files)
    if problems:
        raise SpecError(problems.lines, source=source)
    return spec


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.paths: list[str] = []

    def about(self, path: str) -> bool:
        """Whether a problem was already reported for `path` or inside it."""
        return any(p == path or p.startswith(path + ".") or p.startswith(path + "[") for p in self.paths)

    def add(self, path: str, value: Any, message: str) -> None:
        self.paths.append(path)
        shown = "" if value is None else f" = {_show(value)}"
        self.lines.append(f"{path}{shown}: {message}")

    def __bool__(self) -> bool:
        return bool(self.lines)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BAD = object()  # marks a value that failed validation (already reported)


class _Checker:
    def __init__(self, problems: _Problems, source_dir: Path | None, check_files: bool):
        self.problems = problems
        self.source_dir = source_dir
        self.check_files = check_files

    # --- one scalar value --------------------------------------------------------------
    def scalar(self, p: schema.Param, value: Any, where: str) -> Any:
        add = self.problems.add
        kind = p.kind
        if kind in NUMERIC_KINDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                add(where, value, f"must be {'an integer' if kind == 'int' else 'a number'}{_range_text(p)}")
                return _BAD
            if kind == "int" and not isinstance(value, int):
                add(where, value, f"must be an integer (no decimal point){_range_text(p)}")
                return _BAD
            if not _finite(value):
                add(where, value, f"must be a finite number (at most {len(str(MAX_INT))} digits){_range_text(p)}")
                return _BAD
            if (p.minimum is not None and value < p.minimum) or (p.maximum is not None and value > p.maximum):
                add(where, value, f"out of range; allowed{_range_text(p)}")
                return _BAD
            return float(value) if kind == "float" else int(value)
        if kind == "bool":
            if not isinstance(value, bool):
                add(where, value, "must be true or false")
                return _BAD
            return value
        if kind == "enum":
            if value not in p.choices:
                hint = _suggest(value, p.choices) if isinstance(value, str) else ""
                add(where, value, f"unknown value{hint}; allowed: {' | '.join(p.choices)}")
                return _BAD
            return value
        if kind == "color":
            try:
                return parse_color(value).text
            except ValueError as exc:
                add(where, value, str(exc))
                return _BAD
        if kind == "str":
            if not isinstance(value, str):
                add(where, value, "must be a string")
                return _BAD
            return value
        if kind == "path":
            return self.path_value(p, value, where)
        if kind == "strlist":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                add(where, value, "must be a list of strings")
                return _BAD
            return tuple(value)
        raise AssertionError(f"schema kind {kind!r} not handled")

    def path_value(self, p: schema.Param, value: Any, where: str) -> Any:
        if not isinstance(value, str):
            self.problems.add(where, value, "must be a file path string")
            return _BAD
        if value == "":
            if not p.optional:
                self.problems.add(where, value, "must not be empty")
                return _BAD
            return value
        suffix = Path(value).suffix.lower()
        if p.choices and suffix not in p.choices:
            self.problems.add(where, value, f"unsupported file type {suffix or '(none)'!r}; allowed: "
                              f"{', '.join(p.choices)}")
            return _BAD
        if self.check_files and _find_file(value, self.source_dir) is None:
            places = [str(d) for d in (self.source_dir, ASSETS_DIR) if d is not None]
            self.problems.add(where, value, f"file not found (looked in {' and '.join(places)})")
            return _BAD
        return value

    # --- settings and factors ------------------------------------------------------------
    def setting(self, p: schema.Param, raw: Any) -> Any:
        if isinstance(raw, dict):
            self.problems.add(p.path, raw, "settings take a single fixed value, not a variation table")
            return p.default
        value = self.scalar(p, raw, p.path)
        return p.default if value is _BAD else value

    def factor(self, p: schema.Param, raw: Any, given: bool) -> Factor:
        if not isinstance(raw, dict):
            if isinstance(raw, list):
                self.problems.add(p.path, raw, "a list must be written as a variation table, "
                                  "e.g. { values = [...] }")
                return Factor(p.path, "fixed", (p.default,), p.default)
            value = self.scalar(p, raw, p.path)
            value = p.default if value is _BAD else value
            return Factor(p.path, "fixed", (value,), value)
        fallback = Factor(p.path, "fixed", (p.default,), p.default)
        allowed_forms = FORMS_FOR_KIND.get(p.kind, DEFAULT_FORMS)
        forms = [k for k in raw if k in ALL_FORMS]
        if len(forms) != 1:
            what = "has no variation form" if not forms else f"has several forms ({', '.join(forms)})"
            self.problems.add(p.path, raw, f"{what}; give exactly one of: {', '.join(allowed_forms)}")
            return fallback
        form = forms[0]
        if form not in allowed_forms:
            self.problems.add(f"{p.path}.{form}", raw[form], f"not allowed for {p.kind} parameters; "
                              f"allowed forms: {', '.join(allowed_forms)}")
            return fallback
        extras = schema.FORM_EXTRA_KEYS[form]
        ok = True
        for key in raw:
            if key != form and key not in extras:
                candidates = (form,) + extras
                self.problems.add(f"{p.path}.{key}", raw[key], f"unknown key{_suggest(key, candidates)}; "
                                  f"with {form!r} allowed: {', '.join(candidates)}")
                ok = False
        factor = getattr(self, f"_form_{form}")(p, raw)
        return factor if (ok and factor is not None) else fallback

    def _list(self, p: schema.Param, value: Any, where: str) -> list | None:
        if not isinstance(value, list):
            self.problems.add(where, value, "must be a list")
            return None
        if not value:
            self.problems.add(where, value, "must not be empty")
            return None
        return value

    def _scalars(self, p: schema.Param, items: list, where: str) -> tuple | None:
        out = [self.scalar(p, v, f"{where}[{i}]") for i, v in enumerate(items)]
        return None if any(v is _BAD for v in out) else tuple(out)

    def _base(self, p: schema.Param, raw: dict, values: tuple) -> Any:
        if "base" not in raw:
            return values[0]
        base = self.scalar(p, raw["base"], f"{p.path}.base")
        return _BAD if base is _BAD else base

    def _form_values(self, p: schema.Param, raw: dict) -> Factor | None:
        items = self._list(p, raw["values"], f"{p.path}.values")
        values = self._scalars(p, items, f"{p.path}.values") if items is not None else None
        if values is None:
            return None
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        if duplicates:
            self.problems.add(f"{p.path}.values", list(values), f"duplicate values {', '.join(duplicates)}; "
                              "each value must appear once")
            return None
        base = self._base(p, raw, values)
        return None if base is _BAD else Factor(p.path, "values", values, base)

    def _numbers(self, value: Any, where: str, count: int, what: str) -> tuple | None:
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
                           for v in value)):
            self.problems.add(where, value, f"must be {what}")
            return None
        return tuple(value)

    def _form_range(self, p: schema.Param, raw: dict) -> Factor | None:
        where = f"{p.path}.range"
        args = self._numbers(raw["range"], where, 3, "[start, stop, step] numbers")
        if args is None:
            return None
        start, stop, step = args
        if p.kind == "int" and not all(isinstance(v, int) for v in args):
            self.problems.add(where, raw["range"], "must be integers for an integer parameter")
            return None
        if step <= 0 or stop < start:
            self.problems.add(where, raw["range"], "needs start <= stop and step > 0")
            return None
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > 100_000:
            self.problems.add(where, raw["range"], f"expands to {count} values; at most 100000 allowed")
            return None
        values = [start + i * step for i in range(count)]
        values = [int(v) for v in values] if p.kind == "int" else [round(float(v), 10) for v in values]
        checked = self._scalars(p, values, where)
        if checked is None:
            return None
        base = self._base(p, raw, checked)
        if base is _BAD:
            return None
        args = tuple(int(a) for a in args) if p.kind == "int" else tuple(float(a) for a in args)
        return Factor(p.path, "range", checked, base, args=args)

    def _form_hsv(self, p: schema.Param, raw: dict) -> Factor | None:
        where = f"{p.path}.hsv"
        comps = raw["hsv"]
        if (not isinstance(comps, list) or len(comps) != 3 or not all(isinstance(c, list) and c for c in comps)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
                           for c in comps for v in c)):
            self.problems.add(where, comps, "must be three non-empty lists [[h...], [s...], [v...]] of "
                              "numbers in 0..1")
            return None
        args = tuple(tuple(float(v) for v in c) for c in comps)
        if any(len(set(c)) != len(c) for c in args):
            self.problems.add(where, comps, "duplicate values in a component list")
            return None
        values = tuple(hsv_string(h, s, v) for h, s, v in itertools.product(*args))
        base = self._base(p, raw, values)
        return None if base is _BAD else Factor(p.path, "hsv", values, base, args=args)

    def _bounds(self, p: schema.Param, pair: tuple, where: str, raw: Any) -> bool:
        lo, hi = pair
        if lo > hi:
            self.problems.add(where, raw, "needs lo <= hi")
            return False
        if (p.minimum is not None and lo < p.minimum) or (p.maximum is not None and hi > p.maximum):
            self.problems.add(where, raw, f"out of range; allowed{_range_text(p)}")
            return False
        if p.kind == "int" and not all(isinstance(v, int) for v in pair):
            self.problems.add(where, raw, "must be integers for an integer parameter")
            return False
        return True

    def _form_uniform(self, p: schema.Param, raw: dict) -> Factor | None:
        where = f"{p.path}.uniform"
        args = self._numbers(raw["uniform"], where, 2, "[lo, hi] numbers")
        if args is None or not self._bounds(p, args, where, raw["uniform"]):
            return None
        args = tuple(int(a) for a in args) if p.kind == "int" else tuple(float(a) for a in args)
        return Factor(p.path, "uniform", args=args)

    def _form_normal(self, p: schema.Param, raw: dict) -> Factor | None:
        where = f"{p.path}.normal"
        args = self._numbers(raw["normal"], where, 2, "[mean, std] numbers")
        if args is None:
            return None
        if args[1] < 0:
            self.problems.add(where, raw["normal"], "std must be >= 0")
            return None
        clip = None
        if "clip" in raw:
            clip = self._numbers(raw["clip"], f"{p.path}.clip", 2, "[lo, hi] numbers")
            if clip is None or not self._bounds(p, clip, f"{p.path}.clip", raw["clip"]):
                return None
            clip = tuple(int(c) for c in clip) if p.kind == "int" else tuple(float(c) for c in clip)
        return Factor(p.path, "normal", args=(float(args[0]), float(args[1])), clip=clip)

    def _form_choice(self, p: schema.Param, raw: dict) -> Factor | None:
        items = self._list(p, raw["choice"], f"{p.path}.choice")
        values = self._scalars(p, items, f"{p.path}.choice") if items is not None else None
        if values is None:
            return None
        weights = None
        if "weights" in raw:
            where = f"{p.path}.weights"
            weights = self._numbers(raw["weights"], where, len(values),
                                    f"{len(values)} non-negative numbers (one per choice)")
            if weights is None:
                return None
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                self.problems.add(where, raw["weights"], "must be non-negative with a positive sum")
                return None
            weights = tuple(float(w) for w in weights)
        return Factor(p.path, "choice", values, values[0], weights=weights)


MAX_INT = 2**63 - 1  # larger integers overflow floats and Blender's properties


def _finite(value: int | float) -> bool:
    return -MAX_INT <= value <= MAX_INT if isinstance(value, int) else math.isfinite(value)


def _range_text(p: schema.Param) -> str:
    if p.minimum is None and p.maximum is None:
        return ""
    unit = f" {p.unit}" if p.unit else ""
    lo = "-inf" if p.minimum is None else _num(p.minimum)
    hi = "inf" if p.maximum is None else _num(p.maximum)
    return f" in {lo} .. {hi}{unit}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_design(spec: Spec, problems: _Problems) -> None:
    kind = spec.design
    count = spec.settings["design.count"]
    across = spec.settings["design.across"]
    if problems.about("design.kind"):
        return  # the design checks below depend on a valid kind
    if kind == "random":
        if count <= 0:
            problems.add("design.count", count, "a random design needs count > 0 (the number of images)")
        if across:
            problems.add("design.across", list(across), "only used by design.kind = 'one_at_a_time'")
        return
    for f in spec.factors.values():
        if f.is_distribution:
            problems.add(f"{f.path}.{f.form}", f.to_data()[f.form],
                         f"a distribution is only allowed in a random design (design.kind = 'random'); "
                         f"design.kind = {kind!r} takes values / range / hsv lists")
    if kind == "grid":
        if across:
            problems.add("design.across", list(across), "only used by design.kind = 'one_at_a_time'")
        return
    listed = [f.path for f in spec.listed_factors]
    for i, path in enumerate(across):
        where = f"design.across[{i}]"
        if path not in schema.PARAMS_BY_PATH or not schema.PARAMS_BY_PATH[path].factor:
            factor_paths = [p.path for p in schema.PARAMS if p.factor]
            problems.add(where, path, f"not a factor parameter{_suggest(path, factor_paths)}")
        elif path not in listed:
            problems.add(where, path, f"{path} is not given as a list; design.across names list-valued "
                         f"parameters (listed: {', '.join(listed) or 'none'})")
        elif list(across).count(path) > 1:
            problems.add(where, path, "named twice")


def _check_dependencies(spec: Spec, problems: _Problems, check_files: bool) -> None:
    """Checks between parameters: a user model needs a model file, and so on."""
    def possible(path: str) -> tuple:
        return spec.factors[path].possible_values

    if "model" in possible("car.body") and "" in possible("car.model_file") \
            and not problems.about("car.model_file"):
        problems.add("car.model_file", "", "required when car.body can be 'model' (a .blend/.glb/.gltf/"
                     ".fbx/.obj file)")
    if "image" in possible("background.kind") and "" in possible("background.image") \
            and not problems.about("background.image"):
        problems.add("background.image", "", "required when background.kind can be 'image'")
    hdri_needed = "hdri" in possible("lighting.kind") or "hdri" in possible("background.kind")
    if check_files and hdri_needed and "" in possible("lighting.hdri") and first_bundled_hdri() is None:
        problems.add("lighting.hdri", "", f"'' means the first bundled HDRI, but {HDRI_DIR} has no .exr/.hdr "
                     "file; give a file")


def require_file(spec: Any, param_path: str, value: str) -> Path:
    """The existing file a row's path parameter names (spec.resolve_file, else the path as
    given), or a CarprobeError naming the parameter and where files are looked for."""
    found = spec.resolve_file(param_path, value) if hasattr(spec, "resolve_file") else None
    if found is None and value and Path(value).expanduser().is_file():
        found = Path(value).expanduser()
    if found is None or not Path(found).is_file():
        shown = value or ("'' (first bundled HDRI in assets/hdri)" if param_path == "lighting.hdri" else "''")
        raise CarprobeError(f"{param_path}: file not found: {shown}; give an existing file (absolute, relative "
                            f"to the spec's folder, or to the repository's assets/)")
    return Path(found)


def _find_file(value: str, source_dir: Path | None) -> Path | None:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for folder in (source_dir, ASSETS_DIR):
        if folder is not None and (folder / path).is_file():
            return (folder / path).resolve()
    return None


def first_bundled_hdri() -> Path | None:
    if not HDRI_DIR.is_dir():
        return None
    files = sorted(p for p in HDRI_DIR.iterdir() if p.suffix.lower() in (".exr", ".hdr") and p.is_file())
    return files[0] if files else None


# --- a small TOML writer (stdlib reads TOML but cannot write it) -------------------------

def dumps_toml(data: dict[str, Any]) -> str:
    """Write a spec dict: top-level scalars first, then one [table] per group."""
    lines = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if key not in tables:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables.items():
        lines.append("")
        lines.append(f"[{_toml_key(key)}]")
        for name, value in table.items():
            lines.append(f"{_toml_key(name)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON string escapes (\" \\ \n \t \uXXXX) are all valid TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
