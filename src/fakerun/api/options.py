"""fakerun.run()'s options: the command line's, typed, and the one place they
become its arguments.

`RunOptions` is the signature (`run(**options: Unpack[RunOptions])`): a type
checker sees every option with its type, and at run time each given value is
checked against the same annotation (a TypeError), turned into command-line
text, then parsed by the CLI's own parser (its refusals are ValueErrors in its
words), all before any process starts. A new option of the parser is one line
in `RunOptions` (tests/unit/test_api_options.py names any the two disagree on).
"""

from __future__ import annotations

import collections.abc
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NoReturn, TypedDict

from fakerun.cli.parser import build_parser
from fakerun.errors import UsageError

PathArg = str | os.PathLike[str]


class RunOptions(TypedDict, total=False):
    """The command line's options by their long names (`max_steps` is
    `--max-steps`, `nproc` is `--nproc`/`--nproc-per-node`). Leaving one
    out, or None, is the command's default; a flag is True or not given."""

    # torchrun's
    nproc: int | Literal["gpu", "auto", "cpu"] | None
    nnodes: int | str | None  # N, or an elastic "MIN:MAX"
    standalone: bool | None
    rdzv_backend: str | None
    rdzv_endpoint: str | None  # "HOST[:PORT]"
    rdzv_conf: str | None  # "K=V,..."
    tee: int | str | None  # 0 none, 1 stdout, 2 stderr, 3 both; or per local rank, "0:1,1:2"
    redirects: int | str | None
    role: str | None
    log_line_prefix_template: str | None
    local_ranks_filter: Sequence[int] | None
    node_rank: int | None
    master_addr: str | None
    master_port: int | None
    rdzv_id: str | None
    max_restarts: int | None
    log_dir: PathArg | None
    output_dir: PathArg | None
    resume: bool | PathArg | None  # True: the latest checkpoint in output_dir
    metrics_file: PathArg | None
    tensorboard: PathArg | None
    module: bool | None  # -m: the script is a module, run as `python -m`
    no_python: bool | None  # the script is an executable, not run under python
    run_path: bool | None  # runpy.run_path in the agent's own interpreter
    start_method: Literal["spawn", "fork", "forkserver"] | None
    monitor_interval: float | None
    local_addr: str | None
    logs_specs: str | None
    event_log_handler: str | None
    numa_binding: Literal["node", "socket", "exclusive", "core-complex"] | None
    duplicate_stdout_filters: str | None  # comma-separated
    duplicate_stderr_filters: str | None
    signals_to_handle: str | None  # "SIGTERM,SIGINT,..."
    shutdown_timeout: int | None
    virtual_local_rank: bool | None
    # fakerun's
    sparse_checkpoints: bool | None
    nodes: int | None
    token: str | None  # passed in the job's environment, out of sight of `ps`
    token_file: PathArg | None
    metrics_port: int | None  # this node's GPUs as dcgm-exporter serves them, for Prometheus
    metrics_addr: str | None
    node_timeout: float | None
    max_steps: int | None
    seed: int | None
    speed: float | None
    style: str | None  # "NAME[@VERSION]"
    model: str | None
    gpu: str | None
    funny: bool | None
    start_time: str | datetime | None  # ISO 8601
    exit_after_time: float | str | None  # seconds, or "90s", "5m", "1h30m"
    collective_timeout: float | None
    rdzv_timeout: float | None
    scenario: PathArg | None  # a catalog name or a TOML file
    fail_rank: int | None
    fail_step: int | None


# The parser's options run() has no parameter for, and why.
NOT_OPTIONS: Mapping[str, str] = {
    "--help": "prints and exits",
    "--version": "prints and exits (fakerun.__version__)",
    "--list-scenarios": "prints and exits (fakerun.world.scenarios.catalog())",
    "--output": "run() always reads the job's JSONL events",
    "--no-theatre": "run() has no terminal: several nodes are always merged",
    "--loop": "run() returns when the job ends; a loop never does",
}


class UnknownOption(TypeError, ValueError):
    """An option the command line does not have: a TypeError, as Python's
    unexpected keyword argument, and a ValueError, as run() raised before."""


def to_argv(options: Mapping[str, object]) -> list[str]:
    """`max_steps=20` -> `--max-steps=20`; True -> a bare flag; None and
    False -> left out. The value rides in the flag's own word, so one that
    starts with a dash is never read as an option. Checks each value's type
    (TypeError) but not its value (see `check`)."""
    hints = option_types()
    argv: list[str] = []
    for name, value in options.items():
        if name not in hints:
            raise UnknownOption(f"fakerun.run() got an unknown option {name!r}")
        if not matches(value, hints[name]):
            raise TypeError(f"fakerun.run() option {name}: expected {describe(hints[name])}, "
                            f"got {type(value).__name__} {value!r}")
        if value is None or value is False:
            continue
        flag = flag_of(name)
        argv.append(flag if value is True else f"{flag}={text(value)}")
    return argv


def check(argv: Sequence[str]) -> None:
    """The command's parser reads the arguments as the command would: what
    it refuses is a UsageError (a ValueError) in its words, not an exit."""
    parser = build_parser()
    parser.error = _refuse  # type: ignore[method-assign]  # instead of printing and exiting 2
    parser.parse_args(list(argv))


def _refuse(message: str) -> NoReturn:
    raise UsageError(f"fakerun.run(): {message}")


def option_types() -> dict[str, Any]:
    return typing.get_type_hints(RunOptions)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def matches(value: object, hint: Any) -> bool:
    """Whether `value` is of the annotated type, for the forms RunOptions
    uses. bool is no int here (True steps would be a bug, not a number)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if origin is collections.abc.Sequence:
        return (isinstance(value, Sequence) and not isinstance(value, str | bytes)
                and all(matches(item, args[0]) for item in value))
    if origin is os.PathLike:
        return isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        numbers = (int, float) if hint is float else (int,)
        return isinstance(value, numbers) and not isinstance(value, bool)
    return isinstance(value, hint)


def text(value: object) -> str:
    """A value as the command line spells it."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(text(item) for item in value)
    return str(value)


def describe(hint: Any) -> str:
    """`int | Literal['gpu', 'auto', 'cpu'] | None`: as the annotation reads."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return str(hint.__name__)
    return re.sub(r"\b(?:typing|collections\.abc|os|datetime)\.", "", str(hint))
