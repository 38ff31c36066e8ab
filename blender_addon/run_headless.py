"""Run carprobe's render-side commands in a Blender that does not have the extension installed.

    blender -b -P /path/to/carprobe/blender_addon/run_headless.py -- render SPEC --out DIR [--shard K/N]
    blender -b -P /path/to/carprobe/blender_addon/run_headless.py -- validate SPEC

Everything after ``--`` is what ``carprobe`` (or ``blender -b --command carprobe``) takes; the
exit status is the same too (0 ok, 1 internal error, 2 bad input, 130 interrupted). It also
runs as ``python blender_addon/run_headless.py -- ARGS`` with any Python that has the bpy module.
"""

import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    # Run as a script, this folder is first on sys.path; its sub-packages must not shadow others.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from blender_addon import cli_command

    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    return cli_command(argv, prog="blender -b -P run_headless.py --")


if __name__ == "__main__":
    sys.exit(main())
