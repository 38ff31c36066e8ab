"""Blender extension entry point.

The extension zip's root holds this file and blender_manifest.toml (Blender installs the
repository root as the package ``bl_ext.<repo>.carprobe``). Everything lives in blender_addon/;
this file only re-exports its register/unregister. Nothing else imports it: pytest and
setuptools work on blender_addon/ and analysis/ directly.
"""

from .blender_addon import register, unregister

__all__ = ["register", "unregister"]
