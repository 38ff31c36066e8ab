"""carprobe's Blender half: a bpy-free core (spec, sampling, render sets), the bpy scene and
renderer layer, render-side CLI commands and the extension GUI.

``import blender_addon.core…`` never imports bpy: register()/unregister() import the GUI (and
with it bpy) only when Blender enables the extension. Both leave Blender as they found it.
"""

from __future__ import annotations

import sys
import traceback

CLI_COMMAND = "carprobe"
_cli_handle = None


def cli_command(argv: list[str], prog: str = "blender -b --command carprobe") -> int:
    """`blender -b --command carprobe ARGS`: the `carprobe` console script's render commands.

    Same arguments and exit codes (0 ok, 1 internal error, 2 bad input, 130 interrupted);
    argparse's own exits (--help, bad arguments) become return codes instead of ending Blender.
    """
    from . import cli

    try:
        return cli.main(list(argv), cli.RENDER_COMMANDS, prog=prog)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - an internal error: report it, exit code 1
        traceback.print_exc()
        return 1


def register() -> None:
    global _cli_handle
    import bpy

    from .ui import registration as ui

    ui.register()
    # Blender 4.2+; older Blenders use `blender -b -P blender_addon/run_headless.py -- ARGS`.
    if hasattr(bpy.utils, "register_cli_command") and _cli_handle is None:
        _cli_handle = bpy.utils.register_cli_command(CLI_COMMAND, cli_command)


def unregister() -> None:
    global _cli_handle
    import bpy

    from .ui import registration as ui

    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    ui.unregister()
