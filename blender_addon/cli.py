"""Command-line dispatch shared by the `carprobe` console script and Blender's
`blender -b --command carprobe …` (registered by the extension).

Each command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import torch (or bpy) only inside ``run`` so that `carprobe render` never
loads torch and `carprobe embed` never loads bpy: the two must stay in separate processes.
Exit codes: 0 ok, 1 internal error, 2 bad input (CarprobeError), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .core.errors import CarprobeError

# Render-side commands: the only ones available inside Blender. Module names are relative to
# this package because the installed extension is imported as bl_ext.<repo>.carprobe.
RENDER_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": (".commands.validate", "check a dataset spec and print its sample count"),
    "render": (".commands.render", "render a dataset spec to a render set (headless)"),
    "merge": (".commands.merge", "merge render-set shards into one render set"),
    "preview": (".commands.preview", "render one sample of a spec to an image"),
    "schema": (".commands.schema", "print every spec parameter with its default and range"),
    "build-extension": (".commands.build_extension", "build the Blender extension zip"),
}


def build_parser(commands: dict[str, tuple[str, str]], prog: str = "carprobe") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="carprobe: what do DML models learn?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(module_name, package=__package__)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None, commands: dict[str, tuple[str, str]] = RENDER_COMMANDS,
         prog: str = "carprobe") -> int:
    args = build_parser(commands, prog).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CarprobeError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted; completed work is kept", file=sys.stderr)
        return 130
