"""core.interrupt: Ctrl-C / SIGTERM / a dead parent become a stop between two images."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import pytest

from blender_addon.core import render_set
from blender_addon.core.interrupt import StopRequest, stop_requests
from blender_addon.core.spec import parse_spec

from core_fakes import SMALL_SPEC, FakeRenderer


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_sets_the_request_instead_of_raising(signum):
    before = signal.getsignal(signum)
    with stop_requests() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signum)  # would raise KeyboardInterrupt (or end the process) otherwise
        assert stop.requested() and stop.signum == signum
    assert signal.getsignal(signum) is before


def test_render_samples_stops_between_images_and_keeps_them(tmp_path):
    spec = parse_spec(SMALL_SPEC, None)
    renderer = FakeRenderer()
    with pytest.raises(KeyboardInterrupt):
        render_set.render_samples(spec, tmp_path / "set", renderer, progress=False,
                                  stop_requested=lambda: len(renderer.calls) == 3)
    assert renderer.calls == [0, 1, 2]
    loaded = render_set.read_render_set(tmp_path / "set")
    assert [row["index"] for row in loaded.rows] == [0, 1, 2]


def test_a_watched_parent_that_is_gone_requests_a_stop():
    stop = StopRequest()
    stop.die_with_parent(os.getppid())
    assert not stop.requested()
    stop.die_with_parent(os.getppid() + 1_000_000)  # no parent has that pid: it died
    assert stop.requested()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_the_kernel_is_asked_for_sigterm_when_the_parent_dies():
    libc = ctypes.CDLL(None, use_errno=True)
    old = ctypes.c_int()
    libc.prctl(2, ctypes.byref(old), 0, 0, 0)  # PR_GET_PDEATHSIG
    try:
        StopRequest().die_with_parent(os.getppid())
        now = ctypes.c_int()
        libc.prctl(2, ctypes.byref(now), 0, 0, 0)
        assert now.value == signal.SIGTERM
    finally:
        libc.prctl(1, old.value, 0, 0, 0)


def test_the_first_stop_signal_runs_on_request_once():
    calls = []
    with stop_requests() as stop:
        stop.on_request = lambda: calls.append(stop.signum)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert calls == [signal.SIGINT]
