"""The Python API for test suites: `fakerun.run(...)`.

Keyword arguments mirror the command line (`nproc=4`, `max_steps=20`,
`scenario="rank-crash"`, `speed=0`, `funny=True`). The job runs as a
subprocess (`python -m fakerun`), never inside the caller: forking the
caller's process or taking over its signal handlers would be unsafe in a test
runner. Events come back parsed; nothing is left running, even on a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .cli import build_parser

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Result:
    exit_code: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""  # the JSONL event stream, as printed
    stderr: str = ""  # the launcher's own lines (banner, failure report)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def of(self, event: str) -> list[dict[str, Any]]:
        """Every event of one kind, e.g. `result.of("step")`."""
        return [e for e in self.events if e.get("event") == event]


class FakerunTimeout(TimeoutError):
    """The job outlived `timeout`; it was killed. `result` holds what it printed."""

    def __init__(self, timeout: float, result: Result) -> None:
        super().__init__(f"fakerun did not finish within {timeout:g}s")
        self.result = result


def run(script: str = "train.py", script_args: tuple[str, ...] | list[str] = (), *,
        timeout: float = DEFAULT_TIMEOUT_S, env: dict[str, str] | None = None, **options: Any) -> Result:
    """Run one fakerun job to its end and return its exit code and events."""
    token = options.pop("token", None)
    if token is not None:  # in the environment: other users see a command line
        env = {**(os.environ if env is None else env), "FAKERUN_TOKEN": str(token)}
    argv = [sys.executable, "-m", "fakerun", *to_argv(options), "--output", "jsonl", script, *script_args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The ranks die with their launcher (PR_SET_PDEATHSIG).
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise FakerunTimeout(timeout, _result(proc.returncode, out, err)) from None
    return _result(proc.returncode, out, err)


def to_argv(options: dict[str, Any]) -> list[str]:
    """`max_steps=20` -> `--max-steps 20`; True -> a bare flag; None/False -> omitted.
    An option the CLI does not have is a ValueError, before anything runs."""
    known = {opt for action in build_parser()._actions for opt in action.option_strings}
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag not in known or flag in ("--output", "--help", "--version"):
            raise ValueError(f"fakerun.run() got an unknown option {name!r}")
        if value is None or value is False:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _result(code: int, out: str, err: str) -> Result:
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line after a kill: the rest stands
    return Result(code, events, out, err)
