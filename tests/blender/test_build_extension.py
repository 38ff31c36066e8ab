"""`carprobe build-extension` builds the zip `blender --command extension build` would build.

Blender's own builder (scripts/addons_core/bl_pkg/cli/blender_ext.py, shipped in the bpy
wheel) runs on the same folders; both zips must hold the same files under the same names.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from blender_addon.commands import build_extension as B
from blender_addon.core.errors import CarprobeError

REPO = Path(__file__).resolve().parents[2]


def blender_ext_script() -> Path:
    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.submodule_search_locations, "the bpy wheel is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, f"blender_ext.py not found under {root}"
    return found[-1]


def blender_build(source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(blender_ext_script()), "build", "--source-dir", str(source),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (zip_path,) = out.glob("*.zip")
    return zip_path


def members(path: Path) -> list[tuple[str, int]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, i.compress_type) for i in zf.infolist()]


def load_blender_matcher():
    spec = importlib.util.spec_from_file_location("carprobe_test_blender_ext", blender_ext_script())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PathPatternMatch


def test_repository_package_matches_blenders_build(tmp_path):
    ours = B.build_extension(REPO, tmp_path / "ours")
    theirs = blender_build(REPO, tmp_path / "blender")
    assert ours.name == theirs.name == "carprobe-0.1.0.zip"
    assert members(ours) == members(theirs)
    names = [n for n, _ in members(ours)]
    assert names[0] == "blender_manifest.toml" and "__init__.py" in names
    assert "blender_addon/ui/registration.py" in names and "blender_addon/core/schema.py" in names
    assert any(n.startswith("assets/") for n in names)
    for n in names:   # the torch half, tests, docs, caches stay out
        assert not n.startswith(("analysis/", "tests/", "docs/", "bench/", ".")), n
        assert "__pycache__" not in n and not n.endswith(".pyc"), n


def test_manifest_is_valid_for_blender():
    data = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert B.manifest_problems(data) == []
    assert data["id"] == "carprobe" and data["type"] == "add-on" and data["blender_version_min"] == "4.2.0"
    assert data["license"] == ["SPDX:GPL-3.0-or-later"] and data["permissions"]["files"]
    assert len(data["tagline"]) <= 64 and data["tagline"][-1].isalnum()
    assert data["website"].startswith("https://")
    assert re.fullmatch(r"[^<>]+ <[^<>@\s]+@[^<>@\s]+>", data["maintainer"])  # a name and a contact


PATTERNS = ["__pycache__/", "*.pyc", ".*", "/*.zip", "/docs/", "tests/", "data/**/*.bin", "**/keep/x.txt",
            "!/data/keep.bin", "a/**/b", "/top.txt", "[ab]?.md", "sub/*.log", "\\!bang"]
PATHS = ["__pycache__/", "pkg/__pycache__/", "x.pyc", "pkg/y.pyc", ".git/", ".hidden", "pkg/.x", "out.zip",
         "pkg/out.zip", "docs/", "pkg/docs/", "tests/", "pkg/tests/", "data/keep.bin", "data/a/b/c.bin",
         "data/c.bin", "k/keep/x.txt", "keep/x.txt", "a/b", "a/x/y/b", "ab", "top.txt", "pkg/top.txt",
         "a1.md", "c1.md", "pkg/b2.md", "sub/z.log", "sub/deep/z.log", "!bang", "bang", "readme.md"]


def test_path_patterns_follow_blender_semantics():
    blender_matcher = load_blender_matcher()(PATTERNS)
    ours = B.PathPatternMatch(PATTERNS)
    got = {p: ours.test_path(p) for p in PATHS}
    assert got == {p: blender_matcher.test_path(p) for p in PATHS}
    assert got["pkg/__pycache__/"] and got["data/a/b/c.bin"] and not got["data/keep.bin"]
    assert got["docs/"] and not got["pkg/docs/"] and got["pkg/tests/"] and not got["readme.md"]


def make_package(root: Path, build: str) -> Path:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
    (root / "pkg" / "m.py").write_text("x = 1\n")
    (root / "__init__.py").write_text("")
    (root / "notes.txt").write_text("n")
    (root / ".secret").write_text("s")
    (root / "big.zip").write_bytes(b"PK")
    (root / "pkg" / "wheel.whl").write_bytes(b"w")
    (root / "blender_manifest.toml").write_text(
        'schema_version = "1.0.0"\nid = "demo"\nversion = "1.2.3"\nname = "Demo"\ntagline = "A demo"\n'
        'maintainer = "me"\ntype = "add-on"\nblender_version_min = "4.2.0"\nlicense = ["SPDX:GPL-3.0-or-later"]\n'
        + build)
    return root


@pytest.mark.parametrize("build", ["", '[build]\npaths_exclude_pattern = ["/notes.txt", "*.whl"]\n',
                                   '[build]\npaths = ["__init__.py", "pkg/m.py"]\n', "[build]\n"])
def test_build_rules_match_blender(tmp_path, build):
    root = make_package(tmp_path / "src", build)
    ours = B.build_extension(root, tmp_path / "ours")
    theirs = blender_build(root, tmp_path / "blender")
    assert ours.name == "demo-1.2.3.zip"
    assert members(ours) == members(theirs)


def test_bad_manifest_is_refused_with_every_problem(tmp_path):
    root = make_package(tmp_path / "src", "")
    text = (root / "blender_manifest.toml").read_text()
    (root / "blender_manifest.toml").write_text(text.replace('tagline = "A demo"', 'tagline = "A demo."')
                                                .replace('version = "1.2.3"', 'version = "1.2"')
                                                + 'website = "carprobe.org"\n')
    with pytest.raises(CarprobeError) as err:
        B.build_extension(root, tmp_path / "out")
    assert "tagline: must not end with punctuation" in str(err.value)
    assert "version: a semantic version" in str(err.value)
    assert "website: an http(s) URL expected, found 'carprobe.org'" in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_command_line(tmp_path, capsys):
    from blender_addon import cli

    assert cli.main(["build-extension", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "carprobe-0.1.0.zip").is_file()
    assert "created:" in capsys.readouterr().out
