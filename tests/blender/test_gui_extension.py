"""The built extension zip, installed into the bpy module's user repository, driven through bpy.ops.

One module-scoped install (bpy is imported once per process): operators (load / validate / save /
preview / randomize / render), the slider's instant preview, error reports, the
`blender --command carprobe` handler, and the `blender -b -P run_headless.py` route.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bpy
import pytest

from blender_addon.commands.build_extension import build_extension
from blender_addon.core.render_set import read_render_set
from blender_addon.core.sampling import sample_row
from blender_addon.core.spec import load_spec
from gui_specs import SCENES

REPO = Path(__file__).resolve().parents[2]
MODULE = "bl_ext.user_default.carprobe"

TINY = """\
schema = 1
name = "tiny"

[design]
kind = "grid"

[render]
engine = "workbench"
width = 32
height = 24
samples = 1
masks = false

[camera]
azimuth = { values = [0.0, 120.0, 240.0] }
"""


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """The installed, enabled extension package (its top-level module)."""
    zip_path = build_extension(REPO, tmp_path_factory.mktemp("dist"))
    assert not hasattr(bpy.types.Scene, "carprobe")
    result = bpy.ops.extensions.package_install_files(repo="user_default", filepath=str(zip_path),
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    yield sys.modules[MODULE]
    bpy.ops.preferences.addon_disable(module=MODULE)
    repo_dir = bpy.utils.user_resource("EXTENSIONS", path="user_default")
    bpy.ops.extensions.package_uninstall(repo_directory=repo_dir, pkg_id="carprobe")
    assert not hasattr(bpy.types.Scene, "carprobe")
    assert not os.path.exists(os.path.join(repo_dir, "carprobe"))


@pytest.fixture
def props(ext):
    return bpy.context.scene.carprobe


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def state():
    return bpy.context.window_manager.carprobe_state


def test_installed_from_the_zip_into_the_user_repository(ext):
    assert MODULE in bpy.context.preferences.addons
    user_repo = Path(bpy.utils.user_resource("EXTENSIONS")).resolve()
    assert user_repo in Path(ext.__file__).resolve().parents
    assert user_repo.is_relative_to(Path(os.environ["BLENDER_USER_RESOURCES"]).resolve())
    # the running GUI is the installed copy, not the checkout
    assert type(bpy.context.scene.carprobe).__module__.startswith(MODULE + ".blender_addon.ui")
    assert bpy.ops.carprobe.load_spec.idname() == "CARPROBE_OT_load_spec"
    assert not (Path(ext.__file__).parent / "tests").exists()
    assert not (Path(ext.__file__).parent / "analysis").exists()


def test_load_validate_save_roundtrip(props, tiny, tmp_path):
    assert bpy.ops.carprobe.load_spec(filepath=str(tiny)) == {"FINISHED"}
    assert props.name == "tiny" and props.camera.azimuth_mode == "values"
    assert props.render.engine == "workbench" and props.spec_path == str(tiny)
    assert bpy.ops.carprobe.validate_spec() == {"FINISHED"}
    assert state().sample_count == 3
    props.camera.elevation = 22.5            # an edit in the GUI
    saved = tmp_path / "edited" / "tiny2.toml"
    assert bpy.ops.carprobe.save_spec(filepath=str(saved)) == {"FINISHED"}
    spec = load_spec(saved)
    expected = load_spec(tiny).to_dict()
    expected["camera"] = {"azimuth": {"values": [0.0, 120.0, 240.0]}, "elevation": 22.5}
    assert spec.to_dict() == expected
    assert props.spec_path == str(saved)


def test_a_bad_spec_is_reported_and_nothing_changes(props, tiny, tmp_path):
    bpy.ops.carprobe.load_spec(filepath=str(tiny))
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("kind = \"grid\"", "kind = \"grdi\""))
    with pytest.raises(RuntimeError, match=r'design.kind = "grdi": unknown value'):
        bpy.ops.carprobe.load_spec(filepath=str(bad))
    assert props.name == "tiny" and props.design.kind == "grid" and props.spec_path == str(tiny)
    props.camera.azimuth_values = "0, 500"
    with pytest.raises(RuntimeError, match=r'camera.azimuth.values\[1\] = 500'):
        bpy.ops.carprobe.validate_spec()
    out = tmp_path / "never.toml"
    with pytest.raises(RuntimeError, match="out of range"):
        bpy.ops.carprobe.save_spec(filepath=str(out))
    assert not out.exists()


def camera_location():
    cam = bpy.context.scene.camera
    return tuple(round(v, 4) for v in cam.matrix_world.translation)


def expected_location(spec, index):
    row = sample_row(spec, index)
    return tuple(round(row[f"camera.location_{a}"], 4) for a in "xyz")


def test_preview_operator_slider_and_randomize(props, tiny):
    bpy.ops.carprobe.load_spec(filepath=str(tiny))
    spec = load_spec(tiny)
    assert bpy.ops.carprobe.preview_sample(index=2) == {"FINISHED"}
    assert camera_location() == expected_location(spec, 2)
    assert json.loads(state().preview_row)["index"] == 2
    props.preview_index = 1                   # the slider previews through its update callback
    assert camera_location() == expected_location(spec, 1)
    assert json.loads(state().preview_row)["camera.azimuth"] == 120.0
    for _ in range(3):
        before = props.preview_index
        assert bpy.ops.carprobe.randomize_sample() == {"FINISHED"}
        assert props.preview_index != before and 0 <= props.preview_index < 3
        assert json.loads(state().preview_row)["index"] == props.preview_index
        assert camera_location() == expected_location(spec, props.preview_index)
    props.preview_index = 7                   # out of range: shown in the panel, no exception
    assert "sample index 7: out of range" in state().preview_error and state().preview_row == ""
    with pytest.raises(RuntimeError, match="out of range, the spec has 3 samples"):
        bpy.ops.carprobe.preview_sample(index=9)
    assert "carprobe" in bpy.data.collections
    assert bpy.ops.carprobe.clear_preview() == {"FINISHED"}
    assert "carprobe" not in bpy.data.collections and state().preview_row == ""
    assert not [o for o in bpy.data.objects if o.name.startswith("carprobe.")]


def test_render_tiny_set_and_resume(props, tiny, tmp_path):
    bpy.ops.carprobe.load_spec(filepath=str(tiny))
    out = tmp_path / "set"
    props.output_dir = str(out)
    assert bpy.ops.carprobe.render_dataset() == {"FINISHED"}
    rs = read_render_set(out)
    assert [r["index"] for r in rs.rows] == [0, 1, 2]
    assert rs.info["spec_hash"] == load_spec(tiny).hash
    images = sorted((out / "images").iterdir())
    assert [p.name for p in images] == ["000000.png", "000001.png", "000002.png"]
    with open(images[0], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert state().render_done == state().render_total == 3 and not state().render_running
    mtimes = [p.stat().st_mtime_ns for p in images]
    # a rerun resumes: nothing to do (invoked as from the button; without a window it runs at once)
    assert bpy.ops.carprobe.render_dataset("INVOKE_DEFAULT") == {"FINISHED"}
    assert [p.stat().st_mtime_ns for p in sorted((out / "images").iterdir())] == mtimes
    assert "(3 already complete)" in state().render_message
    props.camera.azimuth_values = "0, 90"        # another spec may not write into this set
    with pytest.raises(RuntimeError, match="holds a render set of a different spec"):
        bpy.ops.carprobe.render_dataset()
    assert not state().render_running


def test_cli_handler_runs_render_commands(ext, tiny, tmp_path, capsys):
    handler = ext.blender_addon.cli_command
    assert handler(["validate", str(tiny)]) == 0
    assert "3" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n[camera]\nazimuth = 1000\n")
    assert handler(["validate", str(bad)]) == 2
    assert "camera.azimuth" in capsys.readouterr().err
    assert handler(["no-such-command"]) == 2
    assert handler(["--help"]) == 0
    assert "validate" in capsys.readouterr().out
    if hasattr(bpy.utils, "register_cli_command"):
        assert ext.blender_addon._cli_handle is not None


def test_cli_handler_renders_a_shard(ext, tiny, tmp_path):
    """`blender -b --command carprobe render SPEC --out DIR --shard K/N`, in process."""
    handler = ext.blender_addon.cli_command
    out = tmp_path / "set"
    assert handler(["render", str(tiny), "--out", str(out), "--shard", "1/2"]) == 0
    assert [r["index"] for r in read_render_set(out).rows] == [0, 2]
    assert handler(["render", str(tiny), "--out", str(out), "--shard", "2/2"]) == 2  # each shard its own folder
    assert handler(["render", str(tiny), "--out", str(tmp_path / "set-2"), "--shard", "2/2"]) == 0
    assert [r["index"] for r in read_render_set(tmp_path / "set-2").rows] == [1]
    assert handler(["render", str(tiny)]) == 2            # argparse: --out is required


@pytest.mark.parametrize("scene", SCENES, ids=[p.name for p in SCENES])
def test_cli_handler_validates_the_bundled_scenes(ext, scene):
    assert ext.blender_addon.cli_command(["validate", str(scene)]) == 0


def run_headless(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, str(REPO / "blender_addon" / "run_headless.py"), "--", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO.parent))


def test_run_headless_script(tiny, tmp_path):
    ok = run_headless("validate", str(tiny))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n[design]\nkind = 'random'\n")
    failed = run_headless("validate", str(bad))
    assert failed.returncode == 2 and "design.count" in failed.stderr
