"""Fixtures for the bpy-free core tests."""

from __future__ import annotations

import pytest
from core_fakes import SMALL_SPEC

from blender_addon.core import spec as spec_module


@pytest.fixture
def small_spec():
    return spec_module.parse_spec(SMALL_SPEC)
