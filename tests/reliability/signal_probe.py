"""A stop signal at an exact point of fakerun's own code.

The launcher runs in this process (`Launcher.run`: its real handlers, forks,
sockets and --loop) under a trace function that counts the line events of
fakerun's code from a marker and sends the signal to this process at the
chosen point; the trace function is off in the forked ranks. A point is a
place in the code, not a guess in time: the same line on every machine,
however loaded. Markers: "reaped", the moment a run's last rank is reaped
(from there to the next run's first poll is the gap between two runs), and
"loop", the start of a run's loop. A point is [cycle, what, marker, signal]:
the cycle-th marker (0: the first run), then `what`, either the n-th line
event after it or "file:function:line", the first time that line is reached
after it (a line the gap never reaches is "missed": the signal then goes out
at the next run's first poll, as in calibration).

`python -m tests.reliability.signal_probe POINTS_JSON [ARGS...]` runs one job
per point and prints one JSON line each (`Outcome`); `--calibrate` prints,
for each marker, how many line events lie between it and the next run's
first poll, so that points can be spread over them.

A lost signal would let the loop run on: two more runs ending after it count
as lost, and the probe then ends the job itself, by raising ProbeAbort out
of the trace function into the launcher's code (its finally clauses tear the
job down); so does a job still going after RUN_TIMEOUT_S. (Not by another
signal: a launcher that loses one may lose that too.)
"""

from __future__ import annotations

import dis
import json
import linecache
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from types import CodeType, FrameType
from typing import Any

import psutil

import fakerun
from fakerun.cli import main as cli
from fakerun.launcher.agent import Launcher
from fakerun.launcher.edges import IO
from fakerun.launcher.job import Job
from fakerun.launcher.supervisor import Supervisor
from fakerun.launcher.workers import WorkerGroup, _fork_rank

PACKAGE = os.path.dirname(fakerun.__file__) + os.sep
REAP = WorkerGroup.reap.__code__
LOOP = Job._loop.__code__
ARGS = ["--nproc", "2", "--max-steps", "3", "--speed", "0", "--loop", "--output", "jsonl", "--seed", "7"]
MARKERS = ("reaped", "loop")
LOST_AFTER = 2  # runs that end after the signal: it was lost
RUN_TIMEOUT_S = 20.0  # one job of the probe, however it goes
# What runs between two runs of a --loop, and around them: each line of these
# is a point of its own (test_loop_ctrl_c), not left to a draw.
BETWEEN_RUNS = (Launcher.run, Launcher._cycle, Job.run, Job._connect_and_loop, Job._loop, Job._done,
                Job._finish, Supervisor.kill_leftovers, WorkerGroup.fork, _fork_rank)


BETWEEN_RUNS_CODE = frozenset(f.__code__ for f in BETWEEN_RUNS)


def lines_between_runs() -> list[str]:
    """Every line of BETWEEN_RUNS (calibration tells which the gap reaches)."""
    points = []
    for function in BETWEEN_RUNS:
        code = function.__code__
        first = code.co_firstlineno
        points += [_where(code, line) for _, line in dis.findlinestarts(code) if line and line > first]
    return sorted(set(points), key=points.index)


@dataclass
class Outcome:
    cycle: int
    what: int | str
    marker: str
    signal: int
    code: int | None = None
    where: str = ""  # file:function:line of the line event the signal went out at
    shutdown: bool = False  # the launcher took it: a shutdown event with its signal
    last: list[Any] = field(default_factory=list)  # the last event and its exit code
    left: list[int] = field(default_factory=list)  # our children still running after run()
    lost: bool = False
    timed_out: bool = False
    missed: bool = False  # a line the gap did not reach
    gap: int | None = None  # line events from the marker to the next run's first poll
    reached: list[str] = field(default_factory=list)  # calibrating: the lines of BETWEEN_RUNS the gap reached

    def ok(self) -> bool:
        code = 128 + self.signal
        return (self.code == code and self.shutdown and self.last == ["run_finished", code]
                and not self.left and not self.lost and not self.timed_out)


class ProbeAbort(BaseException):  # noqa: N818 - not an error of the code under test: the probe ends it
    """Raised by the trace function into the launcher's code: the job is lost or stuck."""


class Injector:
    """The trace function: counts, fires once, then counts runs to call a signal lost."""

    def __init__(self, cycle: int, what: int | str | None, signum: int, marker: str) -> None:
        self.pid = os.getpid()
        self.cycle, self.what, self.signum, self.marker = cycle, what, signum, marker
        self.marks = 0
        self.count: int | None = None
        self.where = ""
        self.fired_at_mark: int | None = None
        self.lost = self.timed_out = self.missed = False
        self.gap: int | None = None
        self.next_loop = False
        self.reached: list[str] = []
        self.deadline = time.monotonic() + RUN_TIMEOUT_S

    def on_call(self, frame: FrameType, _event: str, _arg: Any) -> Any:
        if os.getpid() != self.pid:  # a forked rank: not ours to trace
            sys.settrace(None)
            return None
        if frame.f_code is LOOP:  # a call event reaches the global trace function only
            if self.count is not None:
                self.next_loop = True  # the next run's loop: its first poll ends the gap
            self._marker("loop")
        if not self.timed_out and time.monotonic() > self.deadline:
            self.timed_out = True  # never fired, or the job is stuck: end it
            raise ProbeAbort("timed out")
        return self.on_event if frame.f_code.co_filename.startswith(PACKAGE) else None

    def on_event(self, frame: FrameType, event: str, _arg: Any) -> Any:
        if os.getpid() != self.pid:
            return None
        if event == "return" and frame.f_code is REAP and frame.f_locals["self"].done():
            self._marker("reaped")
        elif event == "line" and self.count is not None:
            if self.what is None and self.gap is None and frame.f_code in BETWEEN_RUNS_CODE:
                self.reached.append(_where(frame.f_code, frame.f_lineno))
            if self.gap is None and self.next_loop and "edges.poll(" in linecache.getline(
                    frame.f_code.co_filename, frame.f_lineno):
                self.gap = self.count
                if not isinstance(self.what, int):  # calibrating, or a line the gap did not reach
                    self.missed = self.what is not None and self.fired_at_mark is None
                    self._fire(frame)
            if self.count == self.what or self.what == _where(frame.f_code, frame.f_lineno):
                self._fire(frame)
            self.count += 1
        return self.on_event

    def _marker(self, kind: str) -> None:
        if kind != self.marker:
            return
        self.marks += 1
        if self.marks == self.cycle + 1:
            self.count = 0
        if self.fired_at_mark is not None and self.marks - self.fired_at_mark >= LOST_AFTER and not self.lost:
            self.lost = True
            raise ProbeAbort("lost")

    def _fire(self, frame: FrameType) -> None:
        if self.fired_at_mark is None:
            self.where = _where(frame.f_code, frame.f_lineno)
            self.fired_at_mark = self.marks
            os.kill(self.pid, self.signum)


def _where(code: CodeType, line: int) -> str:
    return f"{code.co_filename[len(PACKAGE):]}:{code.co_name}:{line}"


def run_once(cycle: int, what: int | str | None, args: list[str], signum: int = signal.SIGINT,
             marker: str = "reaped") -> Outcome:
    config = cli.to_config(cli.build_parser().parse_args(args))
    injector = Injector(cycle, what, signum, marker)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        sys.settrace(injector.on_call)
        try:
            code: int | None = Launcher(config, IO(stdout=out, stderr=out)).run()
        except ProbeAbort:
            code = None
        finally:
            sys.settrace(None)
        try:
            out.seek(0)
            events = [json.loads(line) for line in out if line.startswith("{")]
        except OSError:  # StopOverdue pointed the stream at /dev/null
            events = []
    left = [p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    last = [events[-1].get("event"), events[-1].get("exit_code")] if events else []
    shutdown = any(e.get("event") == "shutdown" and e.get("signal") == signum for e in events)
    return Outcome(cycle, what if what is not None else -1, marker, signum, code, injector.where, shutdown,
                   last, left, injector.lost, injector.timed_out, injector.missed, injector.gap,
                   sorted(set(injector.reached), key=injector.reached.index))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as the launcher leaves it after each run
    if argv[:1] == ["--calibrate"]:
        for marker in MARKERS:
            print(json.dumps(asdict(run_once(0, None, argv[1:] or ARGS, marker=marker))), flush=True)
        return 0
    points, args = json.loads(argv[0]), argv[1:] or ARGS
    for cycle, what, marker, *signum in points:
        print(json.dumps(asdict(run_once(cycle, what, args, *signum, marker=marker))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
