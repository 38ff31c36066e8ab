"""The `carprobe` command line: one entry point for the render half and the analysis half.

Each command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import torch (or bpy) only inside ``run`` so that `carprobe render` never
loads torch and `carprobe embed` never loads bpy: the two must stay in separate processes.
Exit codes: 0 ok, 1 internal error, 2 bad input (CarprobeError), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from blender_addon.core.errors import CarprobeError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("blender_addon.commands.validate", "check a dataset spec and print its sample count"),
    "render": ("blender_addon.commands.render", "render a dataset spec to a render set (headless)"),
    "merge": ("blender_addon.commands.merge", "merge render-set shards into one render set"),
    "preview": ("blender_addon.commands.preview", "render one sample of a spec to an image"),
    "schema": ("blender_addon.commands.schema", "print every spec parameter with its default and range"),
    "build-extension": ("blender_addon.commands.build_extension", "build the Blender extension zip"),
    "embed": ("analysis.commands.embed", "embed a render set with a model (cached)"),
    "silhouettes": ("analysis.commands.silhouettes", "property silhouettes and NR-Prec per factor"),
    "metrics": ("analysis.commands.metrics", "embedding-space and retrieval metrics"),
    "saliency": ("analysis.commands.saliency", "saliency maps, model comparison, mask shares"),
    "train": ("analysis.commands.train", "train a DML model with a chosen loss"),
    "report": ("analysis.commands.report", "write the HTML report for a render set and models"),
    "demo": ("analysis.commands.demo", "the main job: render, train, analyse, report"),
}


def build_parser(commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carprobe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in commands.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(module_name.split(".")[0]):
                continue  # command not part of this installation
            raise
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None, commands: dict[str, tuple[str, str]] = COMMANDS) -> int:
    args = build_parser(commands).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CarprobeError as exc:
        print(f"carprobe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"carprobe {args.command}: interrupted; completed work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
