"""`carprobe schema`: every spec parameter with its kind, default, range or choices and help."""

from __future__ import annotations

import argparse

from ..core import schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(f"carprobe dataset spec, schema = {schema.SCHEMA_VERSION}")
    print(schema.describe_schema())
    return 0
