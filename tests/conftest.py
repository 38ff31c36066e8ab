"""Shared test fixtures. Tests under tests/blender import bpy and run in their own pytest
process (see the Makefile); nothing else may import bpy, and tests/blender may not import torch."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if bpy and torch ended up in one process (they must never share one)."""
    if "bpy" in sys.modules and "torch" in sys.modules:
        print("\nERROR: bpy and torch were both imported in this pytest process; keep tests/blender "
              "(bpy) and tests/analysis (torch) apart and render from torch code in child processes")
        session.exitstatus = 1
