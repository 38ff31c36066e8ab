"""The `carprobe` console script: the render-side commands plus the analysis commands."""

from __future__ import annotations

import sys

from blender_addon import cli as render_cli

ANALYSIS_COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("analysis.commands.embed", "embed a render set with one or more models (cached)"),
    "silhouettes": ("analysis.commands.silhouettes", "property silhouettes and NR-Prec per factor"),
    "metrics": ("analysis.commands.metrics", "embedding-space and retrieval metrics"),
    "saliency": ("analysis.commands.saliency", "saliency maps, model comparison, mask shares"),
    "effects": ("analysis.commands.effects", "factor effects: a change of one factor against a change of car"),
    "train": ("analysis.commands.train", "train a DML model with a chosen loss"),
    "report": ("analysis.commands.report", "write the HTML report for a render set and models"),
    "demo": ("analysis.commands.demo", "the main job: render, train, analyse, report"),
}

COMMANDS = {**render_cli.RENDER_COMMANDS, **ANALYSIS_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    return render_cli.main(argv, COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
