"""carprobe's version, readable inside Blender (where the package is not pip-installed).
Kept equal to pyproject.toml and blender_manifest.toml by a test."""

CARPROBE_VERSION = "0.1.0"
