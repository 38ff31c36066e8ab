"""Command-line dispatch shared by the `carprobe` console script and Blender's
`blender -b --command carprobe …` (registered by the extension).

Each command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import torch (or bpy) only inside ``run`` so that `carprobe render` never
loads torch and `carprobe embed` never loads bpy: the two must stay in separate processes.
Exit codes: 0 ok, 1 internal error, 2 bad input (CarprobeError, bad arguments), 130 interrupted
(listed in every --help). Shared flags come from commands/common.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands.common import EXIT_CODES_HELP
from .core.errors import CarprobeError
from .core.version import CARPROBE_VERSION

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
    """The top-level parser; every subcommand gets --version and the exit codes in its --help."""
    version = f"carprobe {CARPROBE_VERSION}"
    parser = argparse.ArgumentParser(prog=prog, description="carprobe: what do DML models learn?",
                                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.subcommands = {}
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(module_name, package=__package__)
        command_parser = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        command_parser.add_argument("--version", action="version", version=version)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
        parser.subcommands[name] = command_parser
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, but an unknown flag is reported with the subcommand's usage, not the top level's."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None, commands: dict[str, tuple[str, str]] = RENDER_COMMANDS,
         prog: str = "carprobe") -> int:
    """Run one command; returns the exit code (argparse's own exits, --help and bad arguments,
    return theirs: 0 and 2)."""
    try:
        args = parse(build_parser(commands, prog), argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.run(args) or 0)
    except CarprobeError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted; completed work is kept", file=sys.stderr)
        return 130
