"""Render-side commands that run without Blender: merge, and errors of render / preview."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from core_fakes import SMALL_SPEC, FakeRenderer

from blender_addon import cli
from blender_addon.commands import render as render_command
from blender_addon.core import render_set
from blender_addon.core.errors import CarprobeError
from blender_addon.core.shard import shard_indices
from blender_addon.core.spec import dumps_toml, parse_spec


def write_spec(tmp_path: Path, data=SMALL_SPEC) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(dumps_toml(data))
    return path


def test_merge_command_joins_shards(tmp_path, capsys):
    spec = parse_spec(SMALL_SPEC)
    parts = []
    for k in (1, 2):
        part = tmp_path / f"part-{k}"
        render_set.render_samples(spec, part, FakeRenderer(), indices=shard_indices(12, k, 2), progress=False)
        parts.append(str(part))
    code = cli.main(["merge", *parts, "--out", str(tmp_path / "all"), "--no-progress"])
    assert code == 0
    assert "12/12 images" in capsys.readouterr().out
    assert len(render_set.read_render_set(tmp_path / "all").rows) == 12


def test_merge_command_refuses_different_specs_with_exit_2(tmp_path, capsys):
    render_set.render_samples(parse_spec(SMALL_SPEC), tmp_path / "a", FakeRenderer(), indices=[0], progress=False)
    other = parse_spec({**SMALL_SPEC, "render": {"width": 16, "height": 16}})
    render_set.render_samples(other, tmp_path / "b", FakeRenderer(), indices=[0], progress=False)
    code = cli.main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")])
    assert code == 2
    assert "different specs" in capsys.readouterr().err


def test_render_command_rejects_bad_arguments_before_loading_blender(tmp_path, capsys):
    spec_path = write_spec(tmp_path)
    for argv, needle in ((["--shard", "0/3"], "1-based"), (["--shard", ""], "expected K/N"),
                         (["--workers", "0"], "--workers 0"),
                         (["--limit", "0"], "--limit 0")):
        code = cli.main(["render", str(spec_path), "--out", str(tmp_path / "out"), *argv])
        assert code == 2
        assert needle in capsys.readouterr().err
    assert "bpy" not in sys.modules


def test_render_command_refuses_a_folder_of_another_spec_with_exit_2(tmp_path, capsys):
    render_set.render_samples(parse_spec({**SMALL_SPEC, "render": {"width": 16, "height": 16}}),
                              tmp_path / "out", FakeRenderer(), indices=[0], progress=False)
    code = cli.main(["render", str(write_spec(tmp_path)), "--out", str(tmp_path / "out"), "--workers", "2"])
    assert code == 2
    assert "different spec" in capsys.readouterr().err


def test_preview_command_checks_index_and_file_name(tmp_path, capsys):
    spec_path = write_spec(tmp_path)
    assert cli.main(["preview", str(spec_path), "--index", "99", "--out", str(tmp_path / "x.png")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert cli.main(["preview", str(spec_path), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "use a .png file name" in capsys.readouterr().err


def test_worker_command_under_the_bpy_wheel_is_python_dash_m(tmp_path):
    args = argparse.Namespace(spec="scenes/quick.toml", out=str(tmp_path), limit=5, shard="2/4")
    command = render_command.worker_command(args, 1, 3)
    assert command[:3] == [sys.executable, "-m", "blender_addon.commands.render"]
    assert command[command.index("--worker-slice") + 1] == "1/3"
    assert command[command.index("--limit") + 1] == "5" and command[command.index("--shard") + 1] == "2/4"
    assert Path(command[3]).is_absolute()


class _FinishedProcess:
    """A worker process that has already exited successfully (subprocess.Popen stand-in)."""

    returncode = 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


def test_workers_share_the_cores_and_each_fixes_its_thread_count(tmp_path, monkeypatch):
    commands = []

    def popen(cmd, **kwargs):
        commands.append(cmd)
        return _FinishedProcess()

    monkeypatch.setattr(render_command.subprocess, "Popen", popen)
    monkeypatch.setattr(render_command, "usable_cores", lambda: 16)
    spec_path = write_spec(tmp_path)
    assert cli.main(["render", str(spec_path), "--out", str(tmp_path / "out"), "--workers", "3",
                     "--no-progress"]) == 0
    assert len(commands) == 3
    assert all(cmd[cmd.index("--threads") + 1] == "5" for cmd in commands)  # 16 // 3
    commands.clear()
    assert cli.main(["render", str(spec_path), "--out", str(tmp_path / "out"), "--workers", "2",
                     "--threads", "3", "--no-progress"]) == 0
    assert [cmd[cmd.index("--threads") + 1] for cmd in commands] == ["3", "3"]  # explicit wins
    assert render_command.worker_threads(32) == 2  # never one thread: Cycles busy-waits there
    commands.clear()
    assert cli.main(["render", str(spec_path), "--out", str(tmp_path / "out"), "--workers", "2",
                     "--threads", "auto", "--no-progress"]) == 0
    assert all("--threads" not in cmd for cmd in commands)  # auto: each worker leaves Cycles on AUTO


@pytest.mark.parametrize("cores, workers, expected", [(2, 2, 2), (16, 4, 4), (16, 3, 5), (16, 16, 2),
                                                      (1, 2, 2), (64, 1, 64)])
def test_worker_threads_is_a_fair_share_but_never_one_thread(monkeypatch, cores, workers, expected):
    monkeypatch.setattr(render_command, "usable_cores", lambda: cores)
    assert render_command.worker_threads(workers) == expected
    assert render_command.worker_threads(workers, 1) == 1  # an explicit --threads wins
    assert render_command.worker_threads(workers, "auto") is None


@pytest.mark.parametrize("text, expected", [(None, None), ("auto", "auto"), ("AUTO", "auto"), ("3", 3), (4, 4)])
def test_threads_is_auto_or_a_positive_whole_number(text, expected):
    assert render_command.parse_threads(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", ""])
def test_bad_threads_is_a_clear_error(text):
    with pytest.raises(CarprobeError, match="must be 'auto' or a whole number"):
        render_command.parse_threads(text)


def test_the_worker_and_a_single_process_pass_their_thread_count_to_the_renderer(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(render_command, "_render_here", lambda *a, **kw: calls.append(kw["threads"]) or 0)
    spec_path = write_spec(tmp_path)
    out = str(tmp_path / "out")
    assert cli.main(["render", str(spec_path), "--out", out, "--worker-slice", "1/2", "--threads", "4"]) == 0
    assert cli.main(["render", str(spec_path), "--out", out]) == 0
    assert calls == [4, None]  # a single process leaves Cycles on AUTO
    assert cli.main(["render", str(spec_path), "--out", out, "--threads", "0"]) == 2


def test_render_and_merge_into_a_busy_folder_exit_2_before_loading_blender(tmp_path, capsys):
    spec = parse_spec(SMALL_SPEC)
    render_set.render_samples(spec, tmp_path / "part", FakeRenderer(), indices=[0], progress=False)
    busy = tmp_path / "busy"
    claim = render_set.FolderClaim(spec, busy)  # another job owns it
    try:
        for argv in (["render", str(write_spec(tmp_path)), "--out", str(busy)],
                     ["render", str(write_spec(tmp_path)), "--out", str(busy), "--workers", "2"],
                     ["merge", str(tmp_path / "part"), "--out", str(busy)]):
            assert cli.main(argv) == 2
            assert "in use by another carprobe job" in capsys.readouterr().err
    finally:
        claim.release()
    assert "bpy" not in sys.modules


def test_preview_creates_the_folders_of_out_and_mask(tmp_path, monkeypatch, capsys):
    import types

    spec_path = write_spec(tmp_path)
    fake = types.ModuleType("blender_addon.blender.render")  # no bpy here: a fake renderer
    fake.make_image_renderer = lambda spec: FakeRenderer()
    monkeypatch.setitem(sys.modules, "blender_addon.blender.render", fake)
    out, mask = tmp_path / "new" / "deeper" / "x.png", tmp_path / "masks" / "m.png"
    assert cli.main(["preview", str(spec_path), "--index", "1", "--out", str(out), "--mask", str(mask)]) == 0
    assert out.is_file() and mask.is_file() and "sample 1" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert cli.main(["preview", str(spec_path), "--out", str(tmp_path / "file" / "x.png")]) == 2
    assert "--out" in capsys.readouterr().err
