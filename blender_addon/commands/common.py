"""One CLI vocabulary for every carprobe command: the arguments several commands share.

Each command's ``add_arguments`` calls these instead of spelling a shared flag itself, so
progress, workers, device, mixed precision, models and output folders read the same in every
``carprobe COMMAND --help``. Stdlib only: the render commands also run inside Blender.

- progress: ``--no-progress`` (``--quiet`` is the same switch) → ``args.progress``;
- workers: ``--workers N|auto``, the worker processes of that command (Blender processes for
  render, image-decoding DataLoader processes for embed, report and train) → int or "auto";
- device: ``--device auto|cpu|cuda|cuda:N|mps``;
- mixed precision: ``--amp`` / ``--no-amp`` on every command that has it → ``args.amp``;
- models: ``--models M [M …]`` (``--model`` is the same flag) and ``--random-init``;
  model-spec help and parsing that several commands need belong here too;
- output: ``output_folder(path)`` creates a folder an ``--out`` names (and its parents).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import CarprobeError

EXIT_CODES = {0: "ok", 1: "internal error (a bug: please report it)",
              2: "bad input (arguments, spec, render set or model; the message says what and what is allowed)",
              130: "interrupted (Ctrl-C or SIGTERM; completed work is kept, rerun to resume)"}
EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())

# what --workers auto picks for image-decoding DataLoader processes (analysis.embed.auto_workers)
AUTO_LOADER_WORKERS = "none for a single batch, else one per core but one, at most 8"
MODEL_SPECS_HELP = ("carprobe checkpoints (.pt), TorchScript files, reality-check experiment folders, or specs: "
                    "torchvision:<arch>[:dim] (pretrained trunk + head, e.g. torchvision:resnet50:128), "
                    "imagenet:<arch> (pretrained features, no DML training, e.g. imagenet:efficientnet_lite0), "
                    "untrained:<arch>[:dim][:seed=N] (seeded random init)")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", "--quiet", dest="progress", action="store_false", default=True,
                        help="no progress output (on a terminal a bar redrawn in place; otherwise one "
                             "plain line every 10 s)")


def parse_workers(value: str) -> int | str:
    """--workers: 'auto' or a non-negative integer; an argparse type (bad input exits 2)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: must be 'auto' or a non-negative integer")
    return int(text)


def add_workers(parser: argparse.ArgumentParser, what: str, auto: str, default: int | str | None = "auto") -> None:
    """--workers N|auto: `what` the worker processes are in this command, `auto` what auto picks."""
    shown = "auto" if default in ("auto", None) else default
    parser.add_argument("--workers", type=parse_workers, default=default, metavar="N|auto",
                        help=f"worker processes: {what}; auto = {auto} (default {shown})")


def add_device(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    parser.add_argument("--device", default=default,
                        help="auto (default: CUDA if available, else CPU), cpu, cuda, cuda:N, mps")


def add_amp(parser: argparse.ArgumentParser, default: bool | None, default_text: str) -> None:
    """--amp / --no-amp: float16 mixed precision, CUDA only; `default_text` says the default."""
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=default,
                        help=f"float16 mixed precision on CUDA (ignored elsewhere); default {default_text}")


def add_models(parser: argparse.ArgumentParser, required: bool = True, what: str = "models") -> None:
    """--models M [M …] (alias --model), --random-init and --weights FILE (analysis.commands._embeddings.
    load_models applies them)."""
    parser.add_argument("--models", "--model", dest="models", nargs="+", metavar="MODEL", required=required,
                        default=None, help=f"{what}: {MODEL_SPECS_HELP}")
    parser.add_argument("--random-init", action="store_true",
                        help="torchvision:<arch> specs as untrained networks (the same as untrained:<arch>:<dim>); "
                             "model files keep their weights")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="a local state dict for the torchvision:<arch> and imagenet:<arch> specs (an ImageNet "
                             "trunk file, or a whole carprobe model state dict); nothing is downloaded")


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """Create the folder `path` (and its parents); CarprobeError when a file is in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CarprobeError(f"{flag} {path}: exists and is not a folder") from None
    except OSError as exc:
        raise CarprobeError(f"{flag} {path}: cannot create the folder ({exc.strerror})") from None
    return path
