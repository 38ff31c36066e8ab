"""Real bpy renders through the render-side CLI, each command in its own process as a user runs
it: files, metadata and masks; resume after a killed or interrupted run; shards + merge equal a
run with workers; determinism (metadata byte-identical, images within 2/255 per channel: Cycles
on CPU is in practice bit-exact, the tolerance only absorbs thread-scheduling noise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.core import render_set, schema
from blender_addon.core.spec import dumps_toml

REPO = Path(__file__).resolve().parents[2]
IMAGE_TOLERANCE = 2  # of 255, per channel
SPEC = {
    "schema": 1,
    "name": "cli64",
    "design": {"kind": "one_at_a_time", "across": ["car.shape_seed"]},
    "render": {"engine": "cycles", "width": 64, "height": 64, "samples": 4, "masks": True},
    "car": {"body": "hatchback", "shape_seed": {"values": [0, 1]}},
    "paint": {"color": {"values": ["red", "blue", "white"]}},
    "camera": {"azimuth": 35.0, "distance": 8.0},
}  # 2 contexts × 3 colours = 6 images
COUNT = 6


def carprobe(*argv: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run a render-side command in a fresh process, as `carprobe ...` would."""
    code = "import sys; from blender_addon.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kw)


def start(*argv: str, env=None) -> subprocess.Popen:
    code = "import sys; from blender_addon.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def png_chunk_types(path: Path) -> list[bytes]:
    from blender_addon.core.image_files import png_chunks
    return [kind for kind, _ in png_chunks(path.read_bytes())]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def assert_same_images(a: Path, b: Path, names) -> None:
    for name in names:
        diff = np.abs(pixels(a / name) - pixels(b / name)).max()
        assert diff <= IMAGE_TOLERANCE, f"{name}: max difference {diff}/255"


def wait_for_journal(root: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(render_set.journal_entries(root)) < count:
        assert proc.poll() is None, f"render ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "render too slow"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "cli64.toml"
    path.write_text(dumps_toml(SPEC))
    return path


@pytest.fixture(scope="module")
def full_set(spec_file, tmp_path_factory) -> Path:
    """The whole spec rendered by two worker processes."""
    out = tmp_path_factory.mktemp("full") / "set"
    result = carprobe("render", str(spec_file), "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    return out


def test_render_writes_images_masks_metadata_and_versions(full_set):
    loaded = render_set.read_render_set(full_set)
    assert [row["index"] for row in loaded.rows] == list(range(COUNT))
    assert loaded.info["counts"] == {"samples": COUNT, "images": COUNT, "masks": COUNT, "missing": 0}
    assert loaded.info["blender_version"].startswith("4.5")
    for row in loaded.rows:
        image = Image.open(full_set / row["file_name"])
        assert image.size == (64, 64) and image.mode in ("RGB", "RGBA")
        mask = np.asarray(Image.open(full_set / row["mask_file_name"]))
        assert mask.shape == (64, 64)
        ids = set(np.unique(mask).tolist())
        assert ids <= set(range(len(schema.MASK_PARTS)))
        assert {schema.MASK_PARTS.index("background"), schema.MASK_PARTS.index("body")} <= ids
    # a red car is redder than a blue one where the mask says body
    by_colour = {row["paint.color"]: row for row in loaded.rows if row["car.shape_seed"] == 0}
    def body_mean(row):
        mask = np.asarray(Image.open(full_set / row["mask_file_name"])) == schema.MASK_PARTS.index("body")
        return pixels(full_set / row["file_name"])[..., :3][mask].mean(axis=0)
    red, blue = body_mean(by_colour["red"]), body_mean(by_colour["blue"])
    assert red[0] > red[2] and blue[2] > blue[0]
    assert not list(full_set.rglob("*.tmp*"))


def test_resume_after_a_killed_run_renders_only_the_rest(spec_file, full_set, tmp_path):
    out = tmp_path / "set"
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    proc = start("render", str(spec_file), "--out", str(out), "--no-progress",
                 env={**os.environ, "TMPDIR": str(system_tmp)})
    wait_for_journal(out, 1, proc)  # the first image is journaled at once, the next ones a second later
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: a crash
    proc.wait()
    done_before = len(render_set.completed_indices(out))
    assert 1 <= done_before < COUNT
    assert not list(system_tmp.iterdir())  # mask passes and Blender's temp files stay in the set

    result = carprobe("render", str(spec_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"{COUNT - done_before} rendered now, {done_before} already there" in result.stdout
    assert (out / "metadata.csv").read_bytes() == (full_set / "metadata.csv").read_bytes()
    assert not list(out.rglob("*.tmp*")) and not (out / render_set.SCRATCH_DIR).exists()
    assert_same_images(out, full_set, [f"images/{i:06d}.png" for i in range(COUNT)])
    for i in range(COUNT):  # no date stamp: files differ in bytes only where their pixels differ
        a, b = out / f"images/{i:06d}.png", full_set / f"images/{i:06d}.png"
        assert b"tEXt" not in png_chunk_types(a) and b"tIME" not in png_chunk_types(a)
        assert (a.read_bytes() == b.read_bytes()) == bool((pixels(a) == pixels(b)).all())


def test_ctrl_c_stops_cleanly_and_keeps_complete_images(spec_file, tmp_path):
    out = tmp_path / "set"
    proc = start("render", str(spec_file), "--out", str(out), "--workers", "2", "--no-progress")
    wait_for_journal(out, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; completed work is kept" in stderr
    rows = render_set.read_render_set(out).rows
    assert 1 <= len(rows) and len({r["index"] for r in rows}) == len(rows)
    assert not list(out.rglob("*.tmp*"))
    result = carprobe("render", str(spec_file), "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert len(render_set.read_render_set(out).rows) == COUNT


def test_shards_merged_equal_one_run(spec_file, full_set, tmp_path):
    parts = []
    for k in (1, 2):
        part = tmp_path / f"part-{k}"
        result = carprobe("render", str(spec_file), "--out", str(part), "--shard", f"{k}/2")
        assert result.returncode == 0, result.stderr
        assert json.loads((part / "dataset.json").read_text())["shard"] == {"k": k, "n": 2}
        parts.append(str(part))
    merged = tmp_path / "merged"
    result = carprobe("merge", *parts, "--out", str(merged))
    assert result.returncode == 0, result.stderr
    assert (merged / "metadata.csv").read_bytes() == (full_set / "metadata.csv").read_bytes()
    assert (merged / "dataset.json").read_bytes() == (full_set / "dataset.json").read_bytes()
    names = [f"{kind}/{i:06d}.png" for i in range(COUNT) for kind in ("images", "masks")]
    assert_same_images(merged, full_set, names)


def test_limit_and_slurm_shard_from_the_environment(spec_file, full_set, tmp_path):
    out = tmp_path / "set"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    result = carprobe("render", str(spec_file), "--out", str(out), "--limit", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert [r["index"] for r in render_set.read_render_set(out).rows] == [1, 3]  # shard 2/2 of the first 4


def test_preview_renders_one_sample_equal_to_the_set(spec_file, full_set, tmp_path):
    image, mask = tmp_path / "x.png", tmp_path / "x-mask.png"
    result = carprobe("preview", str(spec_file), "--index", "4", "--out", str(image), "--mask", str(mask))
    assert result.returncode == 0, result.stderr
    assert "sample 4 of cli64" in result.stdout and "paint.color = blue" in result.stdout
    assert np.abs(pixels(image) - pixels(full_set / "images/000004.png")).max() <= IMAGE_TOLERANCE
    assert (np.asarray(Image.open(mask)) == np.asarray(Image.open(full_set / "masks/000004.png"))).mean() > 0.99
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp*"))


# --- stopping: Ctrl-C, SIGTERM, a dead parent -------------------------------------------

MANY = {"schema": 1, "name": "many", "design": {"kind": "random", "count": 40, "seed": 3},
        "render": {"engine": "cycles", "width": 32, "height": 32, "samples": 1, "masks": False},
        "camera": {"azimuth": {"uniform": [0, 360]}}}  # 40 tiny images: a full run takes a while
MANY_COUNT = 40


@pytest.fixture(scope="module")
def many_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "many.toml"
    path.write_text(dumps_toml(MANY))
    return path


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc: Linux only, like these tests' signals)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def rendered_images(out: Path) -> int:
    """Images rendered so far: journaled, or whole but waiting for the next journal commit
    (render_set.Journal.commit) under their temporary names."""
    return sum(1 for p in (out / "images").iterdir())


def assert_stopped_cleanly(out: Path, at_most: int) -> None:
    """Every finished image kept and listed, nothing half-written, fewer than all rendered."""
    done = render_set.completed_indices(out)
    assert 1 <= len(done) <= at_most < MANY_COUNT
    rows = render_set.read_render_set(out).rows
    assert sorted(r["index"] for r in rows) == sorted(done)
    assert not list(out.rglob("*.tmp*"))


def test_ctrl_c_stops_a_single_process_render_within_one_image(many_file, tmp_path):
    out = tmp_path / "set"
    proc = start("render", str(many_file), "--out", str(out), "--no-progress")
    wait_for_journal(out, 1, proc)
    before = rendered_images(out)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; completed work is kept" in stderr and "Traceback" not in stderr
    # the image in progress is finished (one more may have ended between count and signal)
    assert_stopped_cleanly(out, before + 2)


@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_ctrl_c_while_bpy_loads_exits_130_without_crashing(many_file, tmp_path, delay):
    out = tmp_path / "set"
    proc = start("render", str(many_file), "--out", str(out), "--no-progress")
    deadline = time.monotonic() + 60
    while "bpy/__init__" not in Path(f"/proc/{proc.pid}/maps").read_text():  # bpy's library is loading
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # not -11 (SIGSEGV), not 0 (swallowed)
    assert len(render_set.completed_indices(out)) <= 2


def test_ctrl_c_stops_workers_within_one_image(many_file, tmp_path):
    out = tmp_path / "set"
    proc = start("render", str(many_file), "--out", str(out), "--workers", "2", "--no-progress")
    wait_for_journal(out, 1, proc)
    workers = children(proc.pid)
    before = rendered_images(out)
    os.kill(proc.pid, signal.SIGINT)  # the parent alone: it forwards the stop to its workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; completed work is kept" in stderr
    assert len(workers) == 2 and not wait_gone(workers, timeout=5)
    assert_stopped_cleanly(out, before + 4)  # per worker: one in progress, one between count and signal


@pytest.mark.parametrize("kill", ["group", "parent"])
def test_workers_die_with_their_parent(many_file, tmp_path, kill):
    out = tmp_path / "set"
    proc = start("render", str(many_file), "--out", str(out), "--workers", "2", "--no-progress")
    wait_for_journal(out, 1, proc)
    workers = children(proc.pid)
    assert len(workers) == 2
    if kill == "group":
        os.killpg(proc.pid, signal.SIGKILL)  # workers share the parent's process group
    else:
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone: workers notice it is gone
    proc.wait()
    assert not wait_gone(workers, timeout=60), "workers outlived their parent"
    assert len(render_set.journal_entries(out)) < MANY_COUNT


def test_single_process_render_keeps_blenders_log_off_stdout(spec_file, tmp_path):
    out = tmp_path / "set"
    result = carprobe("render", str(spec_file), "--out", str(out), "--limit", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{out}: 1/{COUNT} images complete (1 rendered now, 0 already there)"]
    assert "Fra:" not in result.stderr
    log = (out / render_set.LOG_DIR / "render.log").read_text()
    assert "Fra:" in log and "Saved:" in log
    verbose = carprobe("render", str(spec_file), "--out", str(tmp_path / "v"), "--limit", "1", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "Fra:" in verbose.stdout and "Saved:" in verbose.stdout


def test_a_full_disk_never_records_a_short_image(spec_file, tmp_path):
    """A file-size limit (ulimit -f) makes writes fail like a full disk: Blender then writes a short
    PNG without raising; the run must end in exit 2, keep only whole images, and resume."""
    import resource

    out = tmp_path / "set"
    assert carprobe("render", str(spec_file), "--out", str(out), "--limit", "2").returncode == 0
    marker_size = (out / render_set.MARKER).stat().st_size
    limit = max(marker_size, 4000)  # room for journals and masks, not for a 64 px image
    assert (out / "images/000000.png").stat().st_size > limit

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = carprobe("render", str(spec_file), "--out", str(out), preexec_fn=small_disk)
    assert full.returncode == 2, full.stderr
    assert "2 complete images are kept" in full.stderr and "Traceback" not in full.stderr
    assert sorted(render_set.completed_indices(out)) == [0, 1]
    from blender_addon.core.image_files import check_image
    for image in list((out / "images").glob("*.png")) + list((out / "masks").glob("*.png")):
        check_image(image)  # no short file in place
    result = carprobe("render", str(spec_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "4 rendered now, 2 already there" in result.stdout


def test_masks_with_workbench_equal_the_cycles_masks(spec_file, full_set, tmp_path):
    spec = {**SPEC, "render": {**SPEC["render"], "engine": "workbench", "samples": 1}}
    path = tmp_path / "workbench.toml"
    path.write_text(dumps_toml(spec))
    out = tmp_path / "set"
    result = carprobe("render", str(path), "--out", str(out), "--limit", "1")
    assert result.returncode == 0, result.stderr
    mask = np.asarray(Image.open(out / "masks/000000.png"))
    assert (mask == np.asarray(Image.open(full_set / "masks/000000.png"))).mean() > 0.99
    assert not (out / render_set.SCRATCH_DIR).exists()


def test_a_car_model_that_fails_to_import_leaves_no_render_set(tmp_path):
    (tmp_path / "broken.glb").write_bytes(b"glTF this is not a model")
    spec = {**SPEC, "car": {"body": "model", "model_file": "broken.glb", "shape_seed": {"values": [0, 1]}}}
    path = tmp_path / "broken.toml"
    path.write_text(dumps_toml(spec))
    out = tmp_path / "set"
    result = carprobe("render", str(path), "--out", str(out), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "car.model_file" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
