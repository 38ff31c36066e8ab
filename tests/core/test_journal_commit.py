"""Batched durability of the render loop (render_set.Journal.commit): the order of fsyncs and
renames that keeps every journal line's files safe from a crash, and how few fsyncs it takes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from blender_addon.core import render_set
from blender_addon.core.spec import parse_spec

from core_fakes import SMALL_SPEC, FakeRenderer

IMAGES = 12  # SMALL_SPEC's sample count, each with a mask


@pytest.fixture()
def small_spec():
    return parse_spec(SMALL_SPEC, None)


@pytest.fixture()
def events(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("names file descriptors through /proc")
    """Every fsync and rename the render loop does, in order."""
    log: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(render_set, "_fsync_file", lambda path: log.append(("fsync", Path(path).name)))
    monkeypatch.setattr(render_set, "_fsync_dir", lambda path: log.append(("fsync_dir", Path(path).name)))

    def replace(src, dst):
        log.append(("replace", Path(src).name + " -> " + Path(dst).name))
        real_replace(src, dst)

    def fsync(fd):  # the journal and the index files' atomic writes fsync a descriptor
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        journal = name.endswith(".jsonl") and ".tmp" not in name  # not metadata.hf.jsonl's atomic write
        log.append(("fsync_journal" if journal else "fsync_fd", name))
        real_fsync(fd)

    monkeypatch.setattr(render_set.os, "replace", replace)
    monkeypatch.setattr(render_set.os, "fsync", fsync)
    return log


def loop_events(log):
    """Events of the render loop itself: from the first image to the last journal fsync."""
    last = max(i for i, (kind, _) in enumerate(log) if kind == "fsync_journal")
    first = next(i for i, (kind, name) in enumerate(log) if kind == "fsync" and name.startswith(".000000."))
    return log[first:last + 1]


def test_a_batch_takes_one_journal_fsync_and_one_per_folder(tmp_path, small_spec, events, monkeypatch):
    monkeypatch.setattr(render_set, "COMMIT_SECONDS", 1e9, raising=False)  # everything in one batch
    render_set.render_samples(small_spec, tmp_path / "set", FakeRenderer(), progress=False)
    ours = loop_events(events)
    kinds = [kind for kind, _ in ours]
    assert kinds.count("fsync") == 2 * IMAGES  # every image's and mask's data, once
    assert kinds.count("replace") == 2 * IMAGES
    # two commits: the first image at once, then the other 11 together
    assert sorted(name for kind, name in ours if kind == "fsync_dir") == ["images", "images", "journal",
                                                                           "masks", "masks"]
    assert kinds.count("fsync_journal") == 2  # twice for 12 images (was once per image)
    assert "fsync_fd" not in kinds
    assert len(render_set.read_render_set(tmp_path / "set").rows) == IMAGES


@pytest.mark.parametrize("commit_seconds", [0.0, 1e9])
def test_files_are_durable_and_in_place_before_their_journal_line(tmp_path, small_spec, events, monkeypatch,
                                                                 commit_seconds):
    monkeypatch.setattr(render_set, "COMMIT_SECONDS", commit_seconds, raising=False)
    render_set.render_samples(small_spec, tmp_path / "set", FakeRenderer(), progress=False)
    ours = loop_events(events)
    position = {event: i for i, event in enumerate(ours)}
    for i in range(IMAGES):
        for folder in ("images", "masks"):
            replace = [e for e in ours if e[0] == "replace" and e[1].endswith(f" -> {i:06d}.png")][
                folder == "masks"]  # the image first, then the mask
            tmp_name = replace[1].split(" -> ")[0]
            data = position[("fsync", tmp_name)]
            renamed = ours.index(replace)
            folder_synced = min(j for j, e in enumerate(ours) if e == ("fsync_dir", folder) and j > renamed)
            journaled = min(j for j, e in enumerate(ours) if e[0] == "fsync_journal" and j > renamed)
            # data on disk, then the final name, then the folder entry, then the journal line
            assert data < renamed < folder_synced < journaled, (i, folder)


def test_a_crash_before_a_commit_leaves_no_line_without_its_files(tmp_path, small_spec, monkeypatch):
    monkeypatch.setattr(render_set, "COMMIT_SECONDS", 1e9, raising=False)
    root = tmp_path / "set"
    loop = render_set.RenderLoop(small_spec, root, FakeRenderer(), progress=False)
    for _ in range(4):
        loop.step()
        loop._journal.wait()  # a commit in the background has finished (or is killed with us)
        for entry in render_set.journal_entries(root).values():
            assert (root / entry["file_name"]).is_file() and (root / entry["mask_file_name"]).is_file()
    # killed here: only the first image journaled (committed at once); 1-3 wait as temporary files
    assert list(render_set.journal_entries(root)) == [0]
    assert [p.name for p in (root / "images").glob("0*.png")] == ["000000.png"]
    loop._journal.close()
    loop._claim.release()  # the OS frees a killed process's folder lock
    again = FakeRenderer()
    render_set.render_samples(small_spec, root, again, progress=False)  # the resume renders them again
    assert again.calls == list(range(1, IMAGES))
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_commits_run_beside_the_render_and_their_errors_reach_the_loop(tmp_path, small_spec, monkeypatch):
    """A batch commits on a helper thread while the next image renders; a full disk there ends
    the run with the clear error, the images journaled before it kept."""
    import errno
    import threading

    monkeypatch.setattr(render_set, "COMMIT_SECONDS", 0.0, raising=False)  # a commit after every image
    threads = set()
    real = render_set._fsync_dir
    calls = []

    def fsync_dir(path):
        threads.add(threading.current_thread().name)
        calls.append(path)
        if len(calls) == 7:  # the third commit (images, masks, journal folder first, then 2 a commit)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(render_set, "_fsync_dir", fsync_dir)
    with pytest.raises(render_set.CarprobeError, match="no space left") as info:
        render_set.render_samples(small_spec, tmp_path / "set", FakeRenderer(), progress=False)
    assert "carprobe-journal-commit" in threads
    kept = sorted(render_set.completed_indices(tmp_path / "set"))
    assert kept == [0, 1] and "2 complete images are kept" in str(info.value)
    assert not [p for p in (tmp_path / "set").rglob("*") if ".tmp" in p.name]
