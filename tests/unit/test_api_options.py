"""fakerun.run()'s typed options against the command line's parser: every
option has its parameter, each value becomes the text the CLI reads, and a
bad one is refused before any process starts, in the CLI's own words."""

from __future__ import annotations

import argparse
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import fakerun
from fakerun.api import job
from fakerun.api.options import NOT_OPTIONS, RunOptions, UnknownOption, check, flag_of, option_types, to_argv
from fakerun.cli.main import main
from fakerun.cli.parser import build_parser
from fakerun.errors import UsageError


def user_actions() -> list[argparse.Action]:
    """The parser's options a user can give: not the positionals (run()'s
    `script` and `script_args`), not the hidden ones (the command's own
    plumbing between its processes)."""
    return [a for a in build_parser()._actions if a.option_strings and a.help != argparse.SUPPRESS]


def test_every_option_of_the_command_line_is_a_parameter_of_run_and_back() -> None:
    """A new option of the parser fails here until it is one line in
    RunOptions (or NOT_OPTIONS says why run() has none)."""
    names = set(option_types())
    missing = [a.option_strings for a in user_actions()
               if not NOT_OPTIONS.keys() & set(a.option_strings)
               and len({flag_of(n) for n in names} & set(a.option_strings)) != 1]
    assert not missing, (f"run() has no parameter for {missing}: add `name: <type> | None` to RunOptions "
                         "(src/fakerun/api/options.py), or the option to NOT_OPTIONS with the reason")
    flags = {f for a in user_actions() for f in a.option_strings}
    assert not {n for n in names if flag_of(n) not in flags}, "RunOptions names options the parser has not got"
    assert set(NOT_OPTIONS) <= {f for a in build_parser()._actions for f in a.option_strings}


def test_flags_are_booleans_and_valued_options_take_values() -> None:
    hints = option_types()
    for action in user_actions():
        name = next((n for n in hints if flag_of(n) in action.option_strings), None)
        if name is None:
            continue
        takes_bool = "bool" in str(hints[name])
        assert takes_bool == (action.nargs in (0, "?")), name  # "?": --resume, bare or with a path


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_values_become_what_the_cli_reads_from_their_spelling() -> None:
    options: RunOptions = {
        "nproc": "gpu", "nnodes": "1:2", "local_ranks_filter": [0, 1], "tee": 3, "speed": 0.5, "seed": -1,
        "max_steps": 7, "output_dir": Path("out"), "metrics_file": "m.jsonl", "resume": True,
        "start_time": datetime(2026, 1, 30, 14, 23, 15), "exit_after_time": 90, "scenario": "-odd-name",
        "funny": True, "standalone": False, "model": None,
    }
    cli = ["--nproc-per-node", "gpu", "--nnodes", "1:2", "--local-ranks-filter", "0,1", "--tee", "3",
           "--speed", "0.5", "--seed=-1", "--max-steps", "7", "--output-dir", "out", "--metrics-file", "m.jsonl",
           "--resume", "--start-time", "2026-01-30T14:23:15", "--exit-after-time", "90", "--scenario=-odd-name",
           "--funny"]
    assert parse(to_argv(options)) == parse(cli)
    assert parse(to_argv({"resume": "out/checkpoint-5"})).resume == "out/checkpoint-5"


@pytest.mark.parametrize(("options", "expected"), [
    ({"local_ranks_filter": "0,1"}, "local_ranks_filter: expected Sequence[int] | None, got str '0,1'"),
    ({"local_ranks_filter": [0, "1"]}, "local_ranks_filter: expected Sequence[int] | None"),
    ({"max_steps": "5"}, "max_steps: expected int | None, got str '5'"),
    ({"max_steps": 5.0}, "max_steps: expected int | None, got float 5.0"),
    ({"max_steps": True}, "max_steps: expected int | None, got bool True"),
    ({"nproc": "gpus"}, "nproc: expected int | Literal['gpu', 'auto', 'cpu'] | None, got str 'gpus'"),
    ({"speed": "fast"}, "speed: expected float | None"),
    ({"funny": 1}, "funny: expected bool | None, got int 1"),
    ({"output_dir": b"out"}, "output_dir: expected str | PathLike[str] | None, got bytes b'out'"),
    ({"token": 1234}, "token: expected str | None"),
])
def test_a_value_of_the_wrong_type_is_a_type_error(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(TypeError) as info:
        to_argv(options)
    assert str(info.value).startswith(f"fakerun.run() option {expected}")


def test_an_unknown_option_is_a_type_error_and_a_value_error() -> None:
    with pytest.raises(UnknownOption, match="unknown option 'nprocs'") as info:
        to_argv({"nprocs": 2})
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("argv", [["--tee", "5"], ["--nproc", "many"], ["--local-ranks-filter", "0,a"],
                                  ["--exit-after-time", "soon"], ["--token", "a", "--token-file", "t"]])
def test_a_value_the_parser_refuses_is_a_value_error_in_the_clis_words(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    said = capsys.readouterr().err.strip()
    with pytest.raises(UsageError) as info:
        check(argv)
    message = str(info.value).removeprefix("fakerun.run(): ")
    assert said == f"fakerun: error: {message} (see fakerun --help)"


@pytest.fixture
def no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("run() started a process")
    monkeypatch.setattr(subprocess, "Popen", refused)


@pytest.mark.parametrize(("call", "error"), [
    ({"local_ranks_filter": "0,1"}, TypeError),
    ({"tee": 7}, ValueError),
    ({"nproc": 2, "max_steps": 3, "script_args": "--lr 3e-4"}, TypeError),
    ({"script": 42}, TypeError),
    ({"timeout": "60"}, TypeError),
    ({"timeout": 0}, ValueError),
])
def test_run_refuses_before_anything_starts(call: dict[str, Any], error: type[Exception],
                                            no_process: None) -> None:
    with pytest.raises(error):
        fakerun.run(**call)


def test_a_usage_error_of_the_command_is_raised_not_returned() -> None:
    """What only the command can judge (here a scenario it has not got) comes
    back as its exit 2 and one line: run() raises it as its own refusals."""
    line = "fakerun: error: unknown scenario 'nope' (see --list-scenarios)"
    with pytest.raises(UsageError, match=r"^fakerun\.run\(\): unknown scenario 'nope' \(see --list-scenarios\)$"):
        job._result(2, "", f"some banner\n{line}\n")
    assert job._result(1, '{"event": "run_finished"}\n', "").exit_code == 1


def test_the_token_travels_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, Any] = {}

    def popen(argv: list[str], **kwargs: Any) -> None:
        started.update(argv=argv, env=kwargs["env"])
        raise OSError("not started")
    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(OSError, match="not started"):
        fakerun.run(nproc=2, token="s3cret", env={"HOME": os.environ.get("HOME", "/")})
    assert "s3cret" not in " ".join(started["argv"]) and started["env"]["FAKERUN_TOKEN"] == "s3cret"
    assert started["argv"][3:] == ["--nproc=2", "--output", "jsonl", "train.py"]
