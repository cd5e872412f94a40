"""The `fakerun` fixture's value (fakerun.pytest_plugin): run() for one
test, and the test's end, after which none of its jobs is running.

run() itself ends its job however it is left; what a test can still leave
is a run() called in a thread and still waiting when the test ends. Every
job the fixture starts carries a marker in its environment, which its
ranks and agents inherit and keep whatever re-parents them: at teardown,
a job still running is stopped as at run()'s timeout, and a process of one
that outlived its job is killed and fails the test."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Unpack

import psutil

from fakerun.api.job import DEFAULT_TIMEOUT_S, KILL_WAIT_S, STOP_WAIT_S, Result, finish, start
from fakerun.api.options import RunOptions

MARKER_ENV = "FAKERUN_PYTEST_JOB"
POLL_S = 0.05


@dataclass
class FakerunFixture:
    """`fakerun(...)` takes run()'s arguments and returns its Result."""

    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: list[subprocess.Popen[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, script: str | os.PathLike[str] = "train.py", script_args: Sequence[str] = (), *,
                 timeout: float | None = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
                 **options: Unpack[RunOptions]) -> Result:
        marked = {**(os.environ if env is None else env), MARKER_ENV: self.marker}
        proc = start(script, script_args, marked, options, timeout)
        with self._lock:
            self.started.append(proc)
        return finish(proc, timeout)

    def processes(self) -> list[psutil.Process]:
        """The live processes of the jobs this fixture started."""
        return [p for p in psutil.process_iter() if _environ(p).get(MARKER_ENV) == self.marker]

    def close(self) -> Teardown:
        """Stop what still runs, kill what outlived its job; say which."""
        running = [proc for proc in self.started if proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)  # a stop signal: the job tears itself down
        deadline = time.monotonic() + STOP_WAIT_S
        while running and self.processes() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        left = self.processes()
        named = [f"{p.pid} {_name(p)}" for p in left]  # while they are there to be read
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(left, timeout=KILL_WAIT_S)
        for proc in running:  # reaped by the waiting run() too, whichever is first
            proc.wait(KILL_WAIT_S)
        return Teardown(len(running), named)


@dataclass(frozen=True)
class Teardown:
    stopped: int  # jobs still running when the test ended
    killed: list[str]  # processes that outlived their job (or would not stop)


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return {}
        return proc.environ()
    except psutil.Error:  # gone, or another user's
        return {}


def _name(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
