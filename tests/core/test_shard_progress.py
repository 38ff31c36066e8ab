"""Shards (K/N, SLURM, Kubernetes), progress output and the version constant."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pytest

from blender_addon.commands.render import planned_indices
from blender_addon.core.errors import CarprobeError
from blender_addon.core.progress import Progress
from blender_addon.core.shard import parse_shard, shard_from_env, shard_indices
from blender_addon.core.version import CARPROBE_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_parse_shard_is_one_based_and_validated():
    assert parse_shard("3/8") == (3, 8)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/8", "9/8", "3", "a/b", "1/0", "-1/2"):
        with pytest.raises(CarprobeError, match="1-based"):
            parse_shard(bad)


def test_shards_partition_the_indices():
    parts = [list(shard_indices(10, k, 3)) for k in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == list(range(10))
    assert list(shard_indices(2, 3, 3)) == []  # more shards than samples: an empty shard is fine


def test_shard_from_slurm_array_zero_or_one_based():
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4",
                           "SLURM_ARRAY_TASK_MIN": "0"}) == (1, 4)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                           "SLURM_ARRAY_TASK_MIN": "1"}) == (4, 4)
    with pytest.raises(CarprobeError, match="SLURM_ARRAY_TASK_COUNT"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "2"})
    with pytest.raises(CarprobeError, match="contiguous"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"})


def test_shard_from_kubernetes_indexed_job():
    assert shard_from_env({"JOB_COMPLETION_INDEX": "2", "CARPROBE_SHARD_COUNT": "5"}) == (3, 5)
    with pytest.raises(CarprobeError, match="CARPROBE_SHARD_COUNT"):
        shard_from_env({"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(CarprobeError, match="expected an integer"):
        shard_from_env({"JOB_COMPLETION_INDEX": "x", "CARPROBE_SHARD_COUNT": "5"})
    assert shard_from_env({}) is None


def test_render_plans_limit_then_shard():
    assert planned_indices(100, 10, (2, 3)) == [1, 4, 7]
    assert planned_indices(5, None, None) == [0, 1, 2, 3, 4]
    assert planned_indices(5, 50, None) == [0, 1, 2, 3, 4]
    with pytest.raises(CarprobeError, match="--limit 0"):
        planned_indices(5, 0, None)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_on_a_tty_redraws_one_bar_with_eta():
    stream = io.StringIO()
    stream.isatty = lambda: True
    clock = FakeClock()
    bar = Progress(4, label="render", stream=stream, clock=clock)
    clock.now = 10.0
    bar.update()
    assert "\r" in stream.getvalue() and "[#" in stream.getvalue()
    assert "1/4" in stream.getvalue() and "ETA 00:30" in stream.getvalue()
    clock.now = 40.0
    bar.update(3)
    bar.close()
    assert stream.getvalue().endswith("done\n")


def test_progress_without_a_tty_logs_plain_lines_at_intervals():
    stream = io.StringIO()
    clock = FakeClock()
    bar = Progress(100, label="render", stream=stream, clock=clock, log_every=10.0)
    for step in range(100):
        clock.now = step * 0.5  # 50 s in all: about one line per 10 s plus the final line
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 5 <= len(lines) <= 7
    assert re.match(r"render: 100/100 \(100%\) elapsed 00:50 done", lines[-1])


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    bar = Progress(3, stream=stream, enabled=False)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


def test_version_constant_matches_the_packaging_files():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert CARPROBE_VERSION == pyproject["project"]["version"] == manifest["version"]
