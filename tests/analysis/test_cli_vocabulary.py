"""One CLI vocabulary (issue 15): every subcommand spells the shared flags the same way, has
--version, lists the exit codes in --help, reports an unknown flag with its own usage and maps
bad input / Ctrl-C to 2 / 130. Parsing only: nothing here embeds, trains or renders."""

from __future__ import annotations

import argparse
import importlib

import pytest

from analysis import cli
from blender_addon.commands import common
from blender_addon.core.errors import CarprobeError
from blender_addon.core.version import CARPROBE_VERSION

COMMANDS = sorted(cli.COMMANDS)
PARSER = cli.render_cli.build_parser(cli.COMMANDS)

# which shared flags each command has (a command losing one, or spelling it its own way, fails)
HAS_PROGRESS = {"render", "merge", "embed", "silhouettes", "metrics", "effects", "saliency", "train", "report",
                "demo"}
HAS_WORKERS = {"render", "embed", "silhouettes", "metrics", "effects", "train", "report"}
HAS_DEVICE = {"embed", "silhouettes", "metrics", "effects", "saliency", "train", "report", "demo"}
HAS_AMP = {"embed", "train"}
HAS_MODELS = {"embed", "silhouettes", "metrics", "effects", "saliency", "report", "demo"}


def _options(name: str) -> dict[str, argparse.Action]:
    return {opt: action for action in PARSER.subcommands[name]._actions for opt in action.option_strings}


def test_the_shared_flag_tables_name_real_commands():
    for table in (HAS_PROGRESS, HAS_WORKERS, HAS_DEVICE, HAS_AMP, HAS_MODELS):
        assert table <= set(COMMANDS)
    # a new command is placed in the tables below (or knowingly left out of all of them)
    assert set(COMMANDS) == HAS_PROGRESS | {"validate", "preview", "schema", "build-extension"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_spells_the_shared_flags_the_same_way(name):
    options = _options(name)
    assert "--version" in options
    if name in HAS_PROGRESS:
        # one switch, two spellings, one destination
        assert options["--no-progress"] is options["--quiet"]
        assert options["--no-progress"].dest == "progress" and options["--no-progress"].default is True
    else:
        assert "--quiet" not in options and "--no-progress" not in options
    if name in HAS_WORKERS:
        assert options["--workers"].type is common.parse_workers
        assert PARSER.parse_args([*_required(name), "--workers", "auto"]).workers == "auto"
        assert PARSER.parse_args([*_required(name), "--workers", "3"]).workers == 3
    if name in HAS_DEVICE:
        assert "auto" in options["--device"].help
    if name in HAS_AMP:
        assert options["--amp"] is options["--no-amp"]
        assert PARSER.parse_args([*_required(name), "--amp"]).amp is True
        assert PARSER.parse_args([*_required(name), "--no-amp"]).amp is False
    if name in HAS_MODELS:
        assert options["--models"] is options["--model"]
        args = PARSER.parse_args([*_required(name), "--model", "a.pt"])
        assert args.models == ["a.pt"]
    else:
        assert "--model" not in options


def _required(name: str) -> list[str]:
    """Arguments that make `name` parse (positionals and required flags)."""
    return {
        "render": ["render", "spec.toml", "--out", "o"],
        "merge": ["merge", "a", "--out", "o"],
        "preview": ["preview", "spec.toml", "--out", "o.png"],
        "validate": ["validate", "spec.toml"],
        "embed": ["embed", "set", "--models", "m.pt"],
        "silhouettes": ["silhouettes", "set", "--models", "m.pt"],
        "metrics": ["metrics", "set", "--models", "m.pt"],
        "effects": ["effects", "set", "--models", "m.pt"],
        "saliency": ["saliency", "set", "--models", "m.pt"],
    }.get(name, [name])


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_version_and_lists_the_exit_codes(name, capsys):
    assert cli.main([name, "--version"]) == 0
    assert capsys.readouterr().out.strip() == f"carprobe {CARPROBE_VERSION}"
    assert cli.main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"usage: carprobe {name}" in text
    for code in ("0    ok", "2    bad input", "130  interrupted"):
        assert code in text


def test_top_level_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"carprobe {CARPROBE_VERSION}"
    assert cli.main(["--help"]) == 0
    assert "130  interrupted" in capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_flag_prints_the_subcommands_usage_and_exits_2(name, capsys):
    assert cli.main([*_required(name), "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: carprobe {name}")
    assert "unrecognized arguments: --no-such-flag" in err


@pytest.mark.parametrize("name", COMMANDS)
def test_exit_codes_bad_input_2_interrupted_130(name, monkeypatch, capsys):
    module = importlib.import_module(cli.COMMANDS[name][0], package="blender_addon")

    def bad_input(args):
        raise CarprobeError("what was wrong")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", bad_input)
    assert cli.main(_required(name)) == 2
    assert f"carprobe {name}: error: what was wrong" in capsys.readouterr().err
    monkeypatch.setattr(module, "run", interrupted)
    assert cli.main(_required(name)) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(module, "run", lambda args: 0)
    assert cli.main(_required(name)) == 0


def test_workers_rejects_words_and_negative_numbers(capsys):
    assert cli.main(["embed", "set", "--models", "m.pt", "--workers", "many"]) == 2
    assert "'many': must be 'auto' or a non-negative integer" in capsys.readouterr().err
    assert cli.main(["train", "--workers", "-1"]) == 2


def test_output_folder_creates_parents_and_refuses_a_file(tmp_path):
    assert common.output_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CarprobeError, match="--out .*file: exists and is not a folder"):
        common.output_folder(tmp_path / "file")
