"""tests/blender run in their own pytest process (bpy, never torch).

Blender reads its user folders (config, scripts, extensions) from BLENDER_USER_RESOURCES; it is
pointed at a temporary folder before anything imports bpy, so tests never touch the user's
~/.config/blender and extension installs vanish with the folder.
"""

import atexit
import os
import shutil
import tempfile

_user_dir = tempfile.mkdtemp(prefix="carprobe-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _user_dir
atexit.register(shutil.rmtree, _user_dir, ignore_errors=True)
