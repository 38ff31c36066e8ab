"""The GUI's stepped render (ui.render_job): steps, cancel, resume, errors; bpy-free.

The images come from a stand-in renderer; the loop, journal and index files are the real ones.
"""

from __future__ import annotations

import csv
import itertools
import math

import pytest
from PIL import Image

from blender_addon.core import render_set
from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import read_render_set
from blender_addon.core.spec import parse_spec
from blender_addon.ui.render_job import RenderJob

SPEC = {"schema": 1, "name": "job", "design": {"kind": "grid"}, "render": {"masks": True},
        "camera": {"azimuth": {"values": [0, 90, 180, 270]}}, "car": {"shape_seed": {"values": [1, 2]}}}


class FakeRenderer:
    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def __call__(self, row, image_path, mask_path):
        if row["index"] == self.fail_at:
            raise RuntimeError("GPU on fire")
        self.calls.append(row["index"])
        Image.new("RGB", (4, 3), (row["index"], 0, 0)).save(image_path)  # the loop checks it is a whole PNG
        if mask_path is not None:
            Image.new("L", (4, 3), 1).save(mask_path)


def ticking_clock(step=0.1):
    counter = itertools.count()
    return lambda: next(counter) * step


def metadata_indices(out):
    with open(out / "metadata.csv", newline="") as fh:
        return [int(r["index"]) for r in csv.DictReader(fh)]


def test_steps_render_a_few_images_each_until_done(tmp_path):
    spec = parse_spec(SPEC)
    render = FakeRenderer()
    job = RenderJob(spec, tmp_path / "set", render, blender_version="test")
    assert (job.total, job.done, job.progress) == (8, 0, 0.0)
    # each image "takes" 0.1 s on this clock: a 0.25 s budget renders 3 per step
    assert not job.step(0.25, clock=ticking_clock())
    assert render.calls == [0, 1, 2] and job.done == 3 and job.progress == pytest.approx(3 / 8)
    steps = 1
    while not job.step(0.25, clock=ticking_clock()):
        steps += 1
    assert steps == 2 and render.calls == list(range(8))
    assert job.close() == 8
    rs = read_render_set(tmp_path / "set")
    assert [r["index"] for r in rs.rows] == list(range(8))
    assert "done: 8/8" in job.status()


def test_cancel_keeps_completed_images_and_a_rerun_resumes(tmp_path):
    spec = parse_spec(SPEC)
    out = tmp_path / "set"
    job = RenderJob(spec, out, FakeRenderer())
    job.step(0.15, clock=ticking_clock())          # two images
    job.cancel()
    assert job.finished and job.step(10) and job.done == 2
    assert job.close() == 2 and metadata_indices(out) == [0, 1]
    assert "cancelled after 2/8" in job.status()

    render = FakeRenderer()
    again = RenderJob(spec, out, render)
    assert (again.skipped, again.done, again.total) == (2, 2, 8)
    assert again.run() == 8
    assert render.calls == list(range(2, 8))        # nothing rendered twice
    assert "(2 already complete)" in again.status()


def test_a_failing_image_stays_pending(tmp_path):
    spec = parse_spec(SPEC)
    out = tmp_path / "set"
    job = RenderJob(spec, out, FakeRenderer(fail_at=3))
    with pytest.raises(RuntimeError, match="GPU on fire"):
        job.run()
    assert job.closed and job.done == 3 and list(job.pending)[0] == 3
    assert metadata_indices(out) == [0, 1, 2]
    assert RenderJob(spec, out, FakeRenderer()).run() == 8


def test_a_folder_of_another_spec_is_refused(tmp_path):
    out = tmp_path / "set"
    RenderJob(parse_spec(SPEC), out, FakeRenderer(), indices=[0]).run()
    other = dict(SPEC, camera={"azimuth": {"values": [0, 45]}})
    with pytest.raises(CarprobeError, match="different spec"):
        RenderJob(parse_spec(other), out, FakeRenderer())


def test_a_job_reads_the_journals_when_created_not_per_image(tmp_path, monkeypatch):
    spec = parse_spec(SPEC)
    out = tmp_path / "set"
    RenderJob(spec, out, FakeRenderer(), indices=[0, 1]).run()
    reads = []
    real = render_set.journal_entries
    monkeypatch.setattr(render_set, "journal_entries", lambda root: reads.append(root) or real(root))
    render = FakeRenderer()
    job = RenderJob(spec, out, render)
    at_start = len(reads)
    assert at_start >= 1 and job.skipped == 2
    job.step(math.inf)
    assert render.calls == list(range(2, 8)) and len(reads) == at_start  # no re-read per image
    assert job.close() == 8 and metadata_indices(out) == list(range(8))
