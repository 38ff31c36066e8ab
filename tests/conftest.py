"""Shared test fixtures. Tests under tests/blender import bpy and run in their own pytest
process (see the Makefile); nothing else may import bpy, and tests/blender may not import torch."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
