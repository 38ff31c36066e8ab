"""`carprobe build-extension [--out DIR]`: build the installable Blender extension zip.

Writes ``<id>-<version>.zip`` exactly as ``blender --command extension build`` would from the
same folder: the manifest first, then every file of the source folder that the manifest's
``[build]`` rules keep (``paths`` or gitignore-style ``paths_exclude_pattern``; without a
``[build]`` table Blender's defaults), under the same archive names, deflate level 9. The
pattern matcher follows Blender's ``PathPatternMatch`` (scripts/addons_core/bl_pkg/cli/
blender_ext.py, GPL-2.0-or-later) so both builds package the same files. Stdlib only: it runs
in plain Python and inside Blender.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
import zipfile
from fnmatch import translate
from pathlib import Path

from ..core.errors import CarprobeError

MANIFEST_NAME = "blender_manifest.toml"
# Blender's defaults when a manifest has no [build] table.
DEFAULT_EXCLUDE = ["__pycache__/", ".*", "/*.zip"]
TAGLINE_MAX = 64
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# Archives are stored, not deflated (Blender does the same to speed up wheels).
_STORED_SUFFIXES = (".whl", ".bz2", ".gz", ".lz4", ".lzma", ".rar", ".xz", ".zip", ".zst",
                    ".tbz2", ".tgz", ".txz", ".tzst")


def repo_root() -> Path:
    """The folder holding blender_manifest.toml (the repository, or the installed extension)."""
    return Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="folder for carprobe-<version>.zip (default: the current folder)")
    parser.add_argument("--source", default=None, metavar="DIR",
                        help="folder holding blender_manifest.toml (default: this checkout)")
    parser.add_argument("--verbose", action="store_true", help="list every packaged file")


def run(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else repo_root()
    path = build_extension(source, Path(args.out))
    files = package_files(source)
    if args.verbose:
        for _, rel in files:
            print(f"add: {rel}")
    print(f"created: {path} ({len(files)} files, {path.stat().st_size} bytes)")
    return 0


# --- manifest ---------------------------------------------------------------------------

def read_manifest(source: Path) -> dict:
    """Load and check the manifest fields the build depends on; CarprobeError lists problems."""
    path = Path(source) / MANIFEST_NAME
    if not path.is_file():
        raise CarprobeError(f"{path}: not found; build-extension needs the extension manifest")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CarprobeError(f"{path}: not valid TOML: {exc}") from None
    problems = manifest_problems(data)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise CarprobeError(f"{path}: {len(problems)} problem(s):\n{lines}")
    return data


def manifest_problems(data: dict) -> list[str]:
    """The checks Blender's strict build applies to the fields carprobe sets."""
    problems = []
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            problems.append(f"{key}: a non-empty string expected, found {data.get(key)!r}")
    ident = data.get("id")
    if isinstance(ident, str) and (not ident.isidentifier() or "__" in ident
                                   or ident.startswith("_") or ident.endswith("_")):
        problems.append(f"id: {ident!r} must be a Python identifier without '__' or edge '_'")
    for key in ("schema_version", "version"):
        if isinstance(data.get(key), str) and not _SEMVER.match(data[key]):
            problems.append(f"{key}: a semantic version (e.g. 1.2.3) expected, found {data[key]!r}")
    tagline = data.get("tagline")
    if isinstance(tagline, str) and tagline:
        if len(tagline) > TAGLINE_MAX:
            problems.append(f"tagline: at most {TAGLINE_MAX} characters, found {len(tagline)}")
        if not (tagline[-1].isalnum() or tagline[-1] in ")]}"):
            problems.append(f"tagline: must not end with punctuation, found {tagline!r}")
    if data.get("type") not in ("add-on", "theme"):
        problems.append(f"type: 'add-on' or 'theme' expected, found {data.get('type')!r}")
    website = data.get("website")
    if website is not None and not (isinstance(website, str) and re.match(r"https?://[^\s/]+\.[^\s]+$", website)):
        problems.append(f"website: an http(s) URL expected, found {website!r}")
    bmin = data.get("blender_version_min")
    if isinstance(bmin, str) and not re.fullmatch(r"\d+\.\d+\.\d+", bmin):
        problems.append(f"blender_version_min: three numbers like 4.2.0 expected, found {bmin!r}")
    lic = data.get("license")
    if not (isinstance(lic, list) and lic and all(isinstance(x, str) and x for x in lic)):
        problems.append(f"license: a non-empty list of strings expected, found {lic!r}")
    build = data.get("build", {})
    if not isinstance(build, dict):
        problems.append("[build]: must be a table")
        build = {}
    if "generated" in build:
        problems.append("[build]: 'generated' is reserved for Blender")
    for key in ("paths", "paths_exclude_pattern"):
        value = build.get(key)
        if value and not (isinstance(value, list) and all(isinstance(x, str) and x for x in value)):
            problems.append(f"[build] {key}: a list of non-empty strings expected, found {value!r}")
    if build.get("paths") and build.get("paths_exclude_pattern"):
        problems.append("[build]: declare 'paths' or 'paths_exclude_pattern', not both")
    return problems


# --- file selection ---------------------------------------------------------------------

class PathPatternMatch:
    """gitignore-style matcher, the semantics of Blender's extension build.

    ``test_path(path)`` takes a normalised relative path with "/" separators (directories end
    with "/") and is True when the path is excluded. ``!pattern`` re-includes.
    """

    def __init__(self, patterns: list[str]):
        groups: list[tuple[bool, list[str]]] = []
        for pattern in patterns:
            negate = pattern.startswith("!")
            if negate:
                pattern = pattern.lstrip("!")
            if not pattern:
                continue
            regex = self._pattern_regex(pattern)
            if groups and groups[-1][0] == negate:
                groups[-1][1].append(regex)
            else:
                groups.append((negate, [regex]))
        self._regexes = [(neg, re.compile("(?:" + "|".join(rs) + ")", re.MULTILINE)) for neg, rs in groups]

    def test_path(self, path: str) -> bool:
        text = path.rstrip("/").replace("/", "\n")
        if path.endswith("/"):
            text += "/"
        result = False
        for negate, regex in self._regexes:
            if regex.match(text):
                if negate:
                    return False
                result = True
        return result

    @staticmethod
    def _pattern_regex(pattern: str) -> str:
        if pattern.startswith("\\!"):
            pattern = pattern[1:]
        while "//" in pattern:
            pattern = pattern.replace("//", "/")
        while True:
            if pattern.endswith("/**/"):
                pattern = pattern[:-3]
            elif pattern.endswith("/**"):
                pattern = pattern[:-2]
            else:
                break
        while True:
            if pattern.startswith("/**/"):
                pattern = pattern[4:]
            elif pattern.startswith("**/"):
                pattern = pattern[3:]
            else:
                break
        while "/**/**/" in pattern:
            pattern = pattern.replace("/**/**/", "/**/")
        anchored = pattern.startswith("/")
        pattern = pattern.lstrip("/")
        only_directory = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        parts = pattern.split("/")
        stars = []
        for i, part in enumerate(parts):
            if part == "**":
                stars.append(i)
                continue
            regex = translate(part).removesuffix("\\Z")
            if regex.startswith("(?s:"):  # a path component never spans a separator
                regex = "(?:" + regex[4:]
            parts[i] = regex
        for i in reversed(stars):
            before, after = parts[i - 1], parts[i + 1]
            del parts[i - 1:i + 1]
            parts[i - 1] = before + "(?:\n|\n(?s:.*)\n)?" + after
        regex = "\\n".join(parts)
        regex = ("\\A" + regex) if anchored else ("(?s:.*)^" + regex)
        return regex + ("[\\n/]" if only_directory else "/?\\Z")


def _scan(base: str, path: str, keep) -> list[tuple[str, str]]:
    out = []
    for entry in os.scandir(path):
        if entry.is_symlink():
            continue
        rel = os.path.relpath(entry.path, base)
        is_dir = entry.is_dir()
        if not keep(rel, is_dir):
            continue
        if is_dir:
            out.extend(_scan(base, entry.path, keep))
        elif entry.is_file():
            out.append((entry.path, rel))
    return out


def package_files(source: Path, manifest: dict | None = None) -> list[tuple[str, str]]:
    """(absolute path, archive name) of every file the package holds, in Blender's order."""
    source = Path(source)
    manifest = read_manifest(source) if manifest is None else manifest
    extra = [MANIFEST_NAME, *(manifest.get("wheels") or [])]
    build = manifest.get("build")
    base = str(source).rstrip(os.sep)
    files = [(f"{base}{os.sep}{rel}", rel) for rel in extra]
    if build and build.get("paths"):
        for rel in [*build["paths"], *extra[1:]]:
            while "//" in rel:
                rel = rel.replace("//", "/")
            while rel.startswith("./"):
                rel = rel[2:]
            files.append((f"{base}{os.sep}{rel.lstrip('/')}", rel))
    else:
        patterns = (build or {}).get("paths_exclude_pattern") if build is not None else DEFAULT_EXCLUDE
        matcher = PathPatternMatch(patterns) if patterns else None
        known = {os.path.normpath(rel).replace(os.sep, "/").lower() for rel in extra}

        def keep(rel: str, is_dir: bool) -> bool:
            rel = rel.replace(os.sep, "/")
            if matcher is not None:
                ok = not matcher.test_path(rel + "/" if is_dir else rel)
            else:
                ok = not os.path.basename(rel).startswith(".")
            return ok and (is_dir or rel.lower() not in known)

        files.extend(_scan(base, base, keep))
    if manifest.get("type") == "add-on" and not any(rel.startswith("__init__.") for _, rel in files):
        raise CarprobeError(f"{source}: not a Python package: the package root needs an __init__.py")
    missing = [rel for path, rel in files if not os.path.isfile(path)]
    if missing:
        raise CarprobeError(f"{source}: files named in the manifest do not exist: {', '.join(missing)}")
    return files


def build_extension(source: Path | str | None = None, out_dir: Path | str = ".") -> Path:
    """Write ``<id>-<version>.zip`` into out_dir (atomically) and return its path."""
    source = Path(source) if source is not None else repo_root()
    manifest = read_manifest(source)
    files = package_files(source, manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{manifest['id']}-{manifest['version']}.zip"
    out, tmp = out_dir / name, out_dir / f".{name}"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path, rel in files:
                stored = path.lower().endswith(_STORED_SUFFIXES)
                zf.write(path, rel, compress_type=zipfile.ZIP_STORED if stored else None)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
