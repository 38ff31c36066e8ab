"""The render loop and the on-disk render set, with a fake renderer instead of Blender."""

from __future__ import annotations

import csv
import hashlib
import errno
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from blender_addon.core import render_set, sampling, schema
from blender_addon.core.errors import CarprobeError
from blender_addon.core.spec import parse_spec
from blender_addon.core.version import CARPROBE_VERSION

from core_fakes import SMALL_SPEC, FakeRenderer


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every visible file of a render set (journals and markers excluded) → its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def test_full_render_writes_images_masks_metadata_and_dataset_json(tmp_path, small_spec):
    renderer = FakeRenderer()
    result = render_set.render_samples(small_spec, tmp_path / "set", renderer, progress=False,
                                       blender_version="4.5.3")
    root = tmp_path / "set"
    assert result == render_set.RenderResult(rendered=12, skipped=0, complete=12, total=12)
    assert sorted(renderer.calls) == list(range(12))
    for i in range(12):
        assert (root / f"images/{i:06d}.png").read_bytes().startswith(b"\x89PNG")
        assert (root / f"masks/{i:06d}.png").is_file()
    with open(root / "metadata.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert header[0] == "file_name"
    assert header == sampling.metadata_columns(small_spec)
    assert [r[0] for r in rows] == [f"images/{i:06d}.png" for i in range(12)]
    info = json.loads((root / "dataset.json").read_text())
    assert info["spec_hash"] == small_spec.hash
    assert info["spec"] == small_spec.resolved()
    assert info["carprobe_version"] == CARPROBE_VERSION
    assert info["blender_version"] == "4.5.3"
    assert info["counts"] == {"samples": 12, "images": 12, "masks": 12, "missing": 0}
    assert info["factors"] == ["car.shape_seed", "paint.color", "camera.azimuth"]
    assert info["mask_parts"] == {name: i for i, name in enumerate(schema.MASK_PARTS)}
    assert info["shard"] is None
    assert temp_files(root) == []


@pytest.mark.parametrize("told", [True, False])
def test_the_renderers_box_is_recorded_without_reading_the_mask_again(tmp_path, small_spec, monkeypatch, told):
    """A renderer that returns {"bbox": ...} (Blender's: the ids it has in memory) saves a second
    decode of every mask; one that returns None gets the box read from its mask file."""
    read = []
    monkeypatch.setattr(render_set, "mask_bbox", lambda path: (read.append(path), (0, 0, 4, 3))[1])
    fake = FakeRenderer()

    def renderer(row, image_path, mask_path):
        fake(row, image_path, mask_path)
        return {"bbox": (row["index"] % 4, 1, 4, 3)} if told else None

    render_set.render_samples(small_spec, tmp_path / "set", renderer, progress=False)
    with open(tmp_path / "set" / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    boxes = [tuple(int(r[f"bbox_{c}"]) for c in ("x0", "y0", "x1", "y1")) for r in rows]
    if told:
        assert read == [] and boxes == [(i % 4, 1, 4, 3) for i in range(12)]
    else:
        assert len(read) == 12 and boxes == [(0, 0, 4, 3)] * 12


def test_renderer_gets_hidden_temp_paths_in_the_final_folder_with_the_real_suffix(tmp_path, small_spec):
    renderer = FakeRenderer()
    render_set.render_samples(small_spec, tmp_path, renderer, indices=[3], progress=False)
    image_tmp, mask_tmp = renderer.paths[0]
    assert image_tmp.parent == tmp_path / "images" and mask_tmp.parent == tmp_path / "masks"
    assert image_tmp.name.startswith(".") and image_tmp.suffix == ".png"
    assert image_tmp.name != "000003.png" and not image_tmp.exists()


def test_read_render_set_gives_typed_rows_equal_to_sample_row(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), progress=False)
    loaded = render_set.read_render_set(tmp_path)
    # every column but the box measured from the fake renderer's all-car 4x3 masks
    box = dict(zip(sampling.BBOX_COLUMNS, (0, 0, 4, 3)))
    assert loaded.rows == [{**sampling.sample_row(small_spec, i), **box} for i in range(12)]
    assert loaded.spec.hash == small_spec.hash
    assert loaded.image_paths[2] == tmp_path / "images/000002.png"


def test_interrupted_run_keeps_complete_images_and_resume_renders_only_the_rest(tmp_path, small_spec):
    reference = tmp_path / "reference"
    render_set.render_samples(small_spec, reference, FakeRenderer(), progress=False)

    root = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        render_set.render_samples(small_spec, root, FakeRenderer(fail_at=5, error=KeyboardInterrupt()),
                                  progress=False)
    # the index files were written on the way out and list exactly the 5 complete images
    assert len(render_set.read_render_set(root).rows) == 5
    assert json.loads((root / "dataset.json").read_text())["counts"]["missing"] == 7
    assert temp_files(root) == []  # the half-written image is gone
    assert not (root / "images/000005.png").exists()

    resumed = FakeRenderer()
    result = render_set.render_samples(small_spec, root, resumed, progress=False)
    assert resumed.calls == list(range(5, 12))
    assert (result.rendered, result.skipped) == (7, 5)
    assert tree_bytes(root) == tree_bytes(reference)

    again = FakeRenderer()
    render_set.render_samples(small_spec, root, again, progress=False)
    assert again.calls == []  # nothing rendered twice
    assert tree_bytes(root) == tree_bytes(reference)


def test_image_without_journal_line_is_rendered_again_and_listed_once(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0, 1], progress=False)
    # a process killed between renaming image 2 and journaling it leaves an unlisted image
    (tmp_path / "images/000002.png").write_bytes(b"stale")
    renderer = FakeRenderer()
    render_set.render_samples(small_spec, tmp_path, renderer, indices=[0, 1, 2], progress=False)
    assert renderer.calls == [2]
    indices = [row["index"] for row in render_set.read_render_set(tmp_path).rows]
    assert indices == [0, 1, 2]
    assert (tmp_path / "images/000002.png").read_bytes() != b"stale"


def test_torn_journal_line_is_ignored(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0, 1], progress=False)
    journal = next((tmp_path / render_set.JOURNAL_DIR).glob("*.jsonl"))
    with open(journal, "a") as handle:
        handle.write('{"index": 7, "file_na')  # died mid-write
    assert sorted(render_set.completed_indices(tmp_path)) == [0, 1]
    renderer = FakeRenderer()
    render_set.render_samples(small_spec, tmp_path, renderer, indices=[0, 1, 7, 8], progress=False)
    assert renderer.calls == [7, 8]
    # this process appended to the same journal: the torn line did not swallow the new ones
    assert sorted(render_set.completed_indices(tmp_path)) == [0, 1, 7, 8]


def test_stray_temp_files_are_deleted_on_start(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0], progress=False)
    stray = tmp_path / "images" / ".000004.12345-deadbeef.tmp.png"
    stray.write_bytes(b"half")
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[4], progress=False)
    assert not stray.exists()


def test_stray_temp_files_of_other_indices_are_left_to_their_writer(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0], progress=False)
    other = tmp_path / "images" / ".000009.12345-deadbeef.tmp.png"
    other.write_bytes(b"another worker is writing this")
    # a worker of the job that owns the folder (finalize=False) cleans only its own indices
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[4], progress=False,
                              finalize=False)
    assert other.exists()
    render_set.finalize(small_spec, tmp_path)  # once every writer has stopped
    assert not other.exists()


def test_resume_into_a_folder_of_a_different_spec_is_refused(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0], progress=False)
    other = parse_spec({**SMALL_SPEC, "render": {"width": 32, "height": 48}})
    with pytest.raises(CarprobeError, match="different spec") as info:
        render_set.render_samples(other, tmp_path, FakeRenderer(), progress=False)
    assert "new folder" in str(info.value) and "delete" in str(info.value)
    # the name is not part of the hash: a renamed spec resumes
    renamed = parse_spec({**SMALL_SPEC, "name": "renamed"})
    render_set.render_samples(renamed, tmp_path, FakeRenderer(), indices=[1], progress=False)


def test_a_foreign_non_empty_folder_is_refused(tmp_path, small_spec):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.render_samples(small_spec, tmp_path, FakeRenderer(), progress=False)
    assert not (tmp_path / "images").exists()


def test_disk_full_while_rendering_is_a_clear_error_and_keeps_complete_work(tmp_path, small_spec):
    root = tmp_path / "set"
    full = FakeRenderer(fail_at=3, error=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CarprobeError, match="no space left") as info:
        render_set.render_samples(small_spec, root, full, progress=False)
    assert "rerun the same command to resume" in str(info.value)
    assert [r["index"] for r in render_set.read_render_set(root).rows] == [0, 1, 2]
    assert temp_files(root) == []
    renderer = FakeRenderer()
    render_set.render_samples(small_spec, root, renderer, progress=False)
    assert renderer.calls == list(range(3, 12))


def test_disk_full_while_writing_index_files_leaves_the_old_ones_intact(tmp_path, small_spec, monkeypatch):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0, 1], progress=False)
    before = tree_bytes(tmp_path)
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[2], progress=False,
                              finalize=False)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render_set.os, "fsync", no_space)
    with pytest.raises(OSError):
        render_set.write_index_files(small_spec, tmp_path)
    after = tree_bytes(tmp_path)
    assert after["metadata.csv"] == before["metadata.csv"]
    assert after["dataset.json"] == before["dataset.json"]
    assert temp_files(tmp_path) == []


def test_renderer_that_writes_nothing_is_an_error_and_nothing_is_journaled(tmp_path, small_spec):
    def lazy(row, image_path, mask_path):
        pass

    with pytest.raises(RuntimeError, match="wrote no file"):
        render_set.render_samples(small_spec, tmp_path, lazy, indices=[0], progress=False)
    assert render_set.completed_indices(tmp_path) == {}


def test_out_of_range_indices_are_refused(tmp_path, small_spec):
    with pytest.raises(CarprobeError, match="out of range"):
        render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[12], progress=False)


def test_shards_merged_equal_one_run(tmp_path, small_spec):
    single = tmp_path / "single"
    render_set.render_samples(small_spec, single, FakeRenderer(), progress=False, blender_version="4.5.3")
    from blender_addon.core.shard import shard_indices
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part-{k}"
        render_set.render_samples(small_spec, part, FakeRenderer(), indices=shard_indices(12, k, 3),
                                  progress=False, blender_version="4.5.3", shard=(k, 3))
        assert json.loads((part / "dataset.json").read_text())["shard"] == {"k": k, "n": 3}
        parts.append(part)
    merged = render_set.merge(parts, tmp_path / "merged")
    assert len(merged.rows) == 12
    assert tree_bytes(tmp_path / "merged") == tree_bytes(single)  # metadata, dataset.json, images


def test_merge_of_overlapping_or_interrupted_parts_takes_each_index_once(tmp_path, small_spec):
    a, b = tmp_path / "a", tmp_path / "b"
    render_set.render_samples(small_spec, a, FakeRenderer(), indices=range(0, 8), progress=False)
    with pytest.raises(KeyboardInterrupt):
        render_set.render_samples(small_spec, b, FakeRenderer(fail_at=4, error=KeyboardInterrupt()),
                                  indices=range(5, 12), progress=False)
    merged = render_set.merge([a, b], tmp_path / "out")
    assert [r["index"] for r in merged.rows] == list(range(0, 9))


def test_merge_refuses_parts_of_different_specs(tmp_path, small_spec):
    other = parse_spec({**SMALL_SPEC, "design": {"kind": "one_at_a_time", "seed": 5,
                                                 "across": ["car.shape_seed"]}})
    render_set.render_samples(small_spec, tmp_path / "a", FakeRenderer(), indices=[0], progress=False)
    render_set.render_samples(other, tmp_path / "b", FakeRenderer(), indices=[1], progress=False)
    with pytest.raises(CarprobeError, match="different specs"):
        render_set.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.merge([tmp_path / "empty"], tmp_path / "out2")


def test_two_writers_into_one_folder_then_finalize_equal_one_run(tmp_path, small_spec):
    single = tmp_path / "single"
    render_set.render_samples(small_spec, single, FakeRenderer(), progress=False)
    shared = tmp_path / "shared"
    for worker in range(2):
        render_set.render_samples(small_spec, shared, FakeRenderer(), indices=range(worker, 12, 2),
                                  progress=False, finalize=False)
    assert not (shared / "metadata.csv").exists()
    render_set.finalize(small_spec, shared)
    assert tree_bytes(shared) == tree_bytes(single)


def _worker(spec_data, root, worker, count):
    render_set.render_samples(parse_spec(spec_data), root, FakeRenderer(), indices=range(worker, 12, count),
                              progress=False, finalize=False)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_worker_processes_share_one_folder(tmp_path, small_spec):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(SMALL_SPEC, tmp_path, w, 3)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert render_set.finalize(small_spec, tmp_path) == 12
    assert len(list((tmp_path / render_set.JOURNAL_DIR).glob("*.jsonl"))) == 3  # one per process
    assert [r["index"] for r in render_set.read_render_set(tmp_path).rows] == list(range(12))


def test_metadata_is_deterministic_and_timestamp_free(tmp_path, small_spec):
    for name in ("a", "b"):
        render_set.render_samples(small_spec, tmp_path / name, FakeRenderer(), progress=False)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a["metadata.csv"] == b["metadata.csv"] and a["dataset.json"] == b["dataset.json"]


def test_reading_a_folder_without_dataset_json_says_what_to_do(tmp_path, small_spec):
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.read_render_set(tmp_path)
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0], progress=False,
                              finalize=False)
    with pytest.raises(CarprobeError, match="rerun the render command"):
        render_set.read_render_set(tmp_path)


def test_progress_output_is_plain_lines_when_not_a_tty(tmp_path, small_spec, capsys):
    import io
    stream = io.StringIO()
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), progress=True, progress_stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines and "\r" not in stream.getvalue()
    assert lines[-1].startswith("render small: 12/12")


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "x.txt"
    render_set.atomic_write_text(target, "one")
    render_set.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_a_damaged_dataset_json_or_metadata_csv_is_a_clear_error(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0, 1], progress=False)
    metadata = tmp_path / render_set.METADATA_CSV
    good = metadata.read_text(encoding="utf-8")
    lines = good.splitlines(keepends=True)
    metadata.write_text(lines[0] + lines[1] + lines[2][:40], encoding="utf-8")  # torn last line
    with pytest.raises(CarprobeError, match=r"metadata.csv, line 3: the number of fields"):
        render_set.read_render_set(tmp_path)
    metadata.write_text(lines[0] + lines[1].replace(",0,", ",abc,", 1) + lines[2], encoding="utf-8")
    with pytest.raises(CarprobeError, match=r"line 2: column index = 'abc' is not a number"):
        render_set.read_render_set(tmp_path)
    metadata.write_text(good, encoding="utf-8")
    (tmp_path / render_set.DATASET_JSON).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.read_render_set(tmp_path)


# --- reliability (issue 13) -------------------------------------------------------------

class TruncatingRenderer(FakeRenderer):
    """Writes a short image (or mask) at one call without raising, as Blender does on a full disk."""

    def __init__(self, short_at: int, which: str = "image"):
        super().__init__()
        self.short_at, self.which = short_at, which

    def __call__(self, row, image_path, mask_path):
        super().__call__(row, image_path, mask_path)
        if len(self.calls) - 1 == self.short_at:
            target = Path(image_path if self.which == "image" else mask_path)
            target.write_bytes(target.read_bytes()[:-20])  # IEND and the end of the data cut off


@pytest.mark.parametrize("which", ["image", "mask"])
def test_a_short_image_or_mask_is_never_recorded_and_is_rendered_again(tmp_path, small_spec, which):
    root = tmp_path / "set"
    with pytest.raises(CarprobeError, match="3 complete images are kept") as info:
        render_set.render_samples(small_spec, root, TruncatingRenderer(3, which), progress=False)
    assert f"{which}s/000003.png" in str(info.value) and "truncated" in str(info.value)
    assert "free" in str(info.value) and "rerun the same command" in str(info.value).lower()
    assert sorted(render_set.completed_indices(root)) == [0, 1, 2]
    assert not (root / f"{which}s/000003.png").exists() and temp_files(root) == []
    resumed = FakeRenderer()
    render_set.render_samples(small_spec, root, resumed, progress=False)
    assert resumed.calls == list(range(3, 12))


def test_check_image_finds_every_kind_of_damage(tmp_path):
    from blender_addon.core.image_files import DamagedImage, check_image, finish_image
    good = tmp_path / "a.png"
    FakeRenderer()({"index": 5}, good, None)
    check_image(good)
    data = good.read_bytes()
    for name, damaged in (("short", data[:-1]), ("no IEND", data[:-12]), ("empty", b""),
                          ("flipped byte", data[:40] + bytes([data[40] ^ 1]) + data[41:]),
                          ("trailing junk", data + b"junk"), ("not a PNG", b"GIF89a" + data[6:])):
        bad = tmp_path / "b.png"
        bad.write_bytes(damaged)
        with pytest.raises(DamagedImage):
            check_image(bad)
    # text chunks (Blender's date stamp) are dropped; the image stays whole and otherwise equal
    import struct
    import zlib
    text = b"Date\x002026/01/01 00:00:00"
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    stamped = tmp_path / "c.png"
    stamped.write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    check_image(stamped)
    finish_image(stamped)
    assert stamped.read_bytes() == data
    # finish_image: both at once, as the render loop does
    from blender_addon.core.image_files import finish_image
    stamped.write_bytes(data[:33] + chunk + data[33:])
    finish_image(stamped)
    assert stamped.read_bytes() == data
    short = tmp_path / "d.png"
    short.write_bytes((data[:33] + chunk + data[33:])[:-1])
    with pytest.raises(DamagedImage):
        finish_image(short)


def test_merge_refuses_journal_paths_outside_the_part(tmp_path, small_spec):
    part = tmp_path / "part"
    render_set.render_samples(small_spec, part, FakeRenderer(), indices=[0], progress=False)
    planted = tmp_path / "planted.txt"
    planted.write_text("secret")
    journal = next((part / render_set.JOURNAL_DIR).glob("*.jsonl"))
    with open(journal, "a") as handle:
        handle.write(json.dumps({"index": 1, "file_name": "../../planted.txt", "mask_file": ""}) + "\n")
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(CarprobeError, match="not inside the render set's images/ folder") as info:
        render_set.merge([part], out)
    assert str(journal) in str(info.value) and "line 2" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part", "planted.txt"]  # nothing written


def test_metadata_paths_outside_the_set_are_refused(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0, 1], progress=False)
    metadata = tmp_path / render_set.METADATA_CSV
    metadata.write_text(metadata.read_text().replace("images/000001.png", "/etc/passwd"))
    with pytest.raises(CarprobeError, match=r"metadata.csv, line 3: file name '/etc/passwd' is not inside"):
        render_set.read_render_set(tmp_path)


def test_a_folder_without_carprobe_marker_is_never_overwritten(tmp_path, small_spec):
    other = tmp_path / "other_dataset"
    (other / "images").mkdir(parents=True)
    (other / "images/000000.png").write_bytes(b"someone's photo")
    (other / "metadata.csv").write_text("file_name,label\nimages/000000.png,cat\n")
    before = tree_bytes(other)
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.render_samples(small_spec, other, FakeRenderer(), progress=False)
    with pytest.raises(CarprobeError, match="not a carprobe render set"):
        render_set.FolderClaim(small_spec, other)  # what merge and the workers' parent take
    assert tree_bytes(other) == before and sorted(p.name for p in other.iterdir()) == ["images", "metadata.csv"]


def test_a_second_job_on_a_busy_folder_is_refused_and_breaks_nothing(tmp_path, small_spec):
    root = tmp_path / "set"
    first = render_set.RenderLoop(small_spec, root, FakeRenderer(), progress=False)
    first.step()
    in_progress = root / "images" / f".000001.{os.getpid()}-0123abcd.tmp.png"
    in_progress.write_bytes(b"being written")
    with pytest.raises(CarprobeError, match="in use by another carprobe job") as info:
        render_set.RenderLoop(small_spec, root, FakeRenderer(), progress=False)
    assert render_set.LOCK_FILE in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    with pytest.raises(CarprobeError, match="in use"):
        render_set.FolderClaim(small_spec, root)  # what merge and the workers' parent take
    assert in_progress.exists()  # the refused job deleted nothing
    in_progress.unlink()
    while first.pending:
        first.step()
    assert first.finish().complete == 12
    again = FakeRenderer()  # the lock is free once the first job has finished
    render_set.render_samples(small_spec, root, again, progress=False)
    assert again.calls == []


def test_every_leftover_temp_file_and_scratch_folder_is_removed_on_start(tmp_path, small_spec):
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[0], progress=False)
    leftovers = [tmp_path / ".metadata.4242-0badcafe.tmp.csv", tmp_path / ".dataset.4242-0badcafe.tmp.json",
                 tmp_path / render_set.STATE_DIR / ".spec.4242-0badcafe.tmp.json",
                 tmp_path / "masks" / ".000007.4242-0badcafe.tmp.png"]
    for path in leftovers:
        path.write_bytes(b"killed mid-write")
    killed = tmp_path / render_set.SCRATCH_DIR / "4242-0badcafe"  # a killed process's scratch space
    killed.mkdir(parents=True)
    (killed / "carprobe_mask0001.exr").write_bytes(b"x")
    ours = render_set.scratch_dir(tmp_path)  # this process may still be using its own
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=[1], progress=False)
    assert not any(p.exists() for p in leftovers)
    assert not killed.exists() and ours.is_dir()
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("existing", ["absent", "empty"])
def test_a_run_that_fails_before_its_first_image_leaves_the_folder_as_found(tmp_path, small_spec, existing):
    root = tmp_path / "set"
    if existing == "empty":
        root.mkdir()
    with pytest.raises(RuntimeError, match="cannot import"):
        render_set.render_samples(small_spec, root, FakeRenderer(fail_at=0, error=RuntimeError("cannot import")),
                                  progress=False)
    assert (root.exists(), list(root.iterdir()) if root.exists() else []) == (existing == "empty", [])
    # a set that exists keeps everything, even with no image yet (e.g. an empty shard)
    render_set.render_samples(small_spec, root, FakeRenderer(), indices=[], progress=False)
    with pytest.raises(RuntimeError):
        render_set.render_samples(small_spec, root, FakeRenderer(fail_at=0, error=RuntimeError("x")),
                                  progress=False)
    assert (root / render_set.MARKER).is_file() and (root / render_set.DATASET_JSON).is_file()
    render_set.render_samples(small_spec, root, FakeRenderer(), indices=[0], progress=False)
    with pytest.raises(RuntimeError):
        render_set.render_samples(small_spec, root, FakeRenderer(fail_at=0, error=RuntimeError("x")),
                                  progress=False)
    assert (root / render_set.MARKER).is_file() and sorted(render_set.completed_indices(root)) == [0]


def test_a_changed_input_file_refuses_resume_and_merge(tmp_path):
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "car.glb").write_bytes(b"glTF version one")
    data = {**SMALL_SPEC, "car": {**SMALL_SPEC["car"], "body": "model", "model_file": "car.glb"}}
    spec = parse_spec(data, spec_dir)
    render_set.render_samples(spec, tmp_path / "a", FakeRenderer(), indices=[0, 1], progress=False)
    info = json.loads((tmp_path / "a/dataset.json").read_text())
    assert info["files"]["car.model_file"]["car.glb"] == hashlib.sha256(b"glTF version one").hexdigest()
    unused = parse_spec({**data, "car": {**data["car"], "body": "sedan"}}, spec_dir)
    assert render_set.input_files(unused) == {}  # a file the spec never reads does not count
    (spec_dir / "car.glb").write_bytes(b"glTF version two")  # same name, other car
    spec = parse_spec(data, spec_dir)
    with pytest.raises(CarprobeError, match="different car.model_file = 'car.glb': the file changed"):
        render_set.render_samples(spec, tmp_path / "a", FakeRenderer(), progress=False)
    render_set.render_samples(spec, tmp_path / "b", FakeRenderer(), indices=[2], progress=False)
    with pytest.raises(CarprobeError, match="the file changed"):
        render_set.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_shard_into_another_shards_folder_is_refused(tmp_path, small_spec):
    from blender_addon.core.shard import shard_indices
    render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=shard_indices(12, 1, 3),
                              progress=False, shard=(1, 3))
    with pytest.raises(CarprobeError, match=r"holds shard 1/3 of this spec; this run is shard 2/3"):
        render_set.render_samples(small_spec, tmp_path, FakeRenderer(), indices=shard_indices(12, 2, 3),
                                  progress=False, shard=(2, 3))
    with pytest.raises(CarprobeError, match=r"this run is no shard"):
        render_set.render_samples(small_spec, tmp_path, FakeRenderer(), progress=False)
    assert json.loads((tmp_path / "dataset.json").read_text())["shard"] == {"k": 1, "n": 3}


def test_merge_compares_the_rows_of_an_index_held_by_several_parts(tmp_path, small_spec):
    a, b = tmp_path / "a", tmp_path / "b"
    render_set.render_samples(small_spec, a, FakeRenderer(), indices=range(0, 6), progress=False)
    render_set.render_samples(small_spec, b, FakeRenderer(), indices=range(4, 12), progress=False)
    assert len(render_set.merge([a, b], tmp_path / "ok").rows) == 12  # equal rows: fine
    metadata = b / "metadata.csv"
    lines = metadata.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",#00ff00,", ",#00ee00,")  # index 5's paint colour, edited
    assert ",#00ee00," in lines[2]
    metadata.write_text("".join(lines))
    with pytest.raises(CarprobeError, match=r"sample 5 is in .*a and .*b with different metadata \(paint.color"):
        render_set.merge([a, b], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_full_disk_at_start_or_at_the_end_is_exit_2_never_a_traceback(tmp_path, small_spec, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(render_set.os, "fsync", no_space)  # the marker cannot be written
        with pytest.raises(CarprobeError, match="no space left.*0 complete images are kept"):
            render_set.render_samples(small_spec, tmp_path / "new", FakeRenderer(), progress=False)
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(render_set, "write_index_files", no_space)  # the last metadata.csv
    with pytest.raises(CarprobeError, match="no space left.*12 complete images are kept"):
        render_set.render_samples(small_spec, tmp_path / "set", FakeRenderer(), progress=False)
    with pytest.raises(CarprobeError, match="12 complete images are kept"):
        render_set.finalize(small_spec, tmp_path / "set")
