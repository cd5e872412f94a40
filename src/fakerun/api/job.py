"""`fakerun.run(...)`: one job, to its end, as a test suite runs it.

The job runs as a subprocess (`python -m fakerun`), never inside the caller:
forking the caller's process or taking over its signal handlers would be
unsafe in a test runner. Events come back parsed; nothing is left running
however run() is left: a return, its timeout, an exception, the caller's
Ctrl+C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

import psutil

from fakerun.api.options import PathArg, RunOptions, check, matches, to_argv
from fakerun.errors import ExitCode, FakerunError, UsageError

DEFAULT_TIMEOUT_S = 300.0
STOP_WAIT_S = 5.0  # fakerun ends a job within 4 s of a stop signal (README, Guarantees)
KILL_WAIT_S = 5.0
USAGE_PREFIX = "fakerun: error: "  # the command's one line before its exit 2


@dataclass(frozen=True)
class Result:
    # The launcher's, as torchrun's: 0, or 1 when the job failed or a stop
    # signal ended it (run()'s own SIGTERM at its timeout too: the
    # FakerunTimeout's result says 1; a `shutdown` event names the signal).
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


class FakerunTimeout(FakerunError, TimeoutError):
    """The job outlived `timeout`; it was stopped (killed, if it would not
    stop). `result` holds what it printed."""

    def __init__(self, timeout: float, result: Result) -> None:
        super().__init__(f"fakerun did not finish within {timeout:g}s")
        self.result = result


def run(script: str | os.PathLike[str] = "train.py", script_args: Sequence[str] = (), *,
        timeout: float | None = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
        **options: Unpack[RunOptions]) -> Result:
    """Run one fakerun job to its end and return its exit code and events.
    `options` are the command line's (see RunOptions). A value of the wrong
    type is a TypeError, one the command refuses a ValueError (UsageError),
    both raised before the job starts a rank. However run() is left (a
    return, its timeout, an exception, the caller's Ctrl+C), the job has
    ended when it is."""
    return finish(start(script, script_args, env, options, timeout), timeout)


def finish(proc: subprocess.Popen[str], timeout: float | None) -> Result:
    """Wait for a started job to end (ending it at its timeout) and read it."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _end(proc)
        raise FakerunTimeout(timeout or 0.0, _result(proc.returncode, out, err)) from None
    except BaseException:  # the caller's KeyboardInterrupt, or anything else: the job ends with us
        _end(proc)
        raise
    return _result(proc.returncode, out, err)


def start(script: str | os.PathLike[str], script_args: Sequence[str], env: Mapping[str, str] | None,
          options: RunOptions, timeout: float | None) -> subprocess.Popen[str]:
    """Check everything, then start the job's launcher."""
    if not matches(timeout, float | None):
        raise TypeError(f"fakerun.run() timeout: expected float | None, got {timeout!r}")
    if timeout is not None and not timeout > 0:  # NaN too: compared, it is never > 0
        raise ValueError(f"fakerun.run() timeout must be a positive number of seconds, got {timeout!r}")
    if not matches(script, PathArg) or not matches(script_args, Sequence[str]):
        raise TypeError(f"fakerun.run(): script must be a path and script_args a sequence of strings, "
                        f"got {script!r} and {script_args!r}")
    argv = [*to_argv(options), "--output", "jsonl", os.fspath(script), *script_args]
    check(argv)  # the token too: given with token_file, refused as the command refuses both
    token = options.get("token")
    if token is not None:  # in the environment: other users see a command line
        env = {**(os.environ if env is None else env), "FAKERUN_TOKEN": token}
        argv.remove(f"--token={token}")
    # Its own session: the caller's terminal does not signal it; run() does.
    return subprocess.Popen([sys.executable, "-m", "fakerun", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)


def _end(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """End the job and wait for all of it; what it printed. First by SIGTERM,
    a stop signal (fakerun tears its ranks and nodes down and removes its run
    directory); whatever is left after STOP_WAIT_S, or on a second interrupt,
    is killed. Its ranks and agents run in sessions of their own, so the kill
    is of the process tree, not of a group."""
    descendants = _descendants(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)  # a no-op once it has exited
        return proc.communicate(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        return _kill(proc, descendants + _descendants(proc.pid))
    except BaseException:
        _kill(proc, descendants + _descendants(proc.pid))
        raise


def _descendants(pid: int) -> list[psutil.Process]:
    """The launcher's descendants, as they are now (once it is gone, its
    orphans can no longer be found from it)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill(proc: subprocess.Popen[str], descendants: list[psutil.Process]) -> tuple[str, str]:
    proc.kill()  # ours to reap, through Popen: its exit code is the result's
    for member in descendants:
        with contextlib.suppress(psutil.Error):
            member.kill()  # psutil checks the pid is still that process
    psutil.wait_procs(descendants, timeout=KILL_WAIT_S)
    return proc.communicate()


def _result(code: int, out: str, err: str) -> Result:
    """The job's result; a usage error (exit 2, before any rank started:
    a value only the command could judge, such as a scenario it has not
    got) is raised as run() raises its own."""
    if code == ExitCode.USAGE:
        said = [line.removeprefix(USAGE_PREFIX) for line in err.splitlines() if line.startswith(USAGE_PREFIX)]
        raise UsageError(f"fakerun.run(): {said[-1] if said else err.strip()}")
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line after a kill: the rest stands
    return Result(code, events, out, err)
