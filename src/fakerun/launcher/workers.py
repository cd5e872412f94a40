"""The local worker group: forked rank processes, supervised with psutil.

Ranks are forked, not exec'd: on a 2-core machine forking 8 ranks from a
process that has imported fakerun takes 0.02-0.04 s, against 0.3-0.4 s for 8
fresh `python -c "import zmq, msgpack"` interpreters (bench/bench.py's
start-up floor), which is what lets the first rank line appear within 0.4 s
(bench/bench.py measures that start-up). The first group is forked before
the launcher creates its zmq Context or any thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from fakerun.config.options import RunConfig
from fakerun.errors import FakerunError
from fakerun.rank.process import FORK_BLOCKED, RankSpec, run_child
from fakerun.system.streams import silence


class ForkFailed(FakerunError, RuntimeError):
    """The system would start no more processes (EAGAIN: `ulimit -u`, the
    pids left, memory); the ranks already started are gone. One line."""


@dataclass
class Worker:
    spec: RankSpec
    proc: psutil.Process
    exitcode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def rank(self) -> int:
        return self.spec.rank

    @property
    def local_rank(self) -> int:
        return self.spec.local_rank


@dataclass
class WorkerGroup:
    workers: list[Worker] = field(default_factory=list)
    _running: dict[int, Worker] = field(init=False, repr=False)  # by pid, in rank order

    def __post_init__(self) -> None:
        self._running = {w.pid: w for w in self.workers if w.exitcode is None}

    @classmethod
    def fork(cls, specs: list[RankSpec], config: RunConfig,
             fork: Callable[[], int] | None = None) -> WorkerGroup:
        """A rank per spec, or ForkFailed with none left running (`fork`:
        os.fork, which tests replace to make it fail)."""
        for stream in (sys.stdout, sys.stderr):  # a child must not inherit (and repeat) buffered output
            try:
                stream.flush()
            except (OSError, ValueError):
                silence(stream)
        # Signals stay blocked while forking: one arriving in a child before it
        # has reset its handlers would be recorded in the child's copy of the
        # launcher's inbox and lost. The child unblocks after resetting them.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            pids: list[int] = []
            for spec in specs:
                pids.append(_fork_rank(spec, config, old, fork or os.fork, pids))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return cls([Worker(spec, psutil.Process(pid)) for spec, pid in zip(specs, pids, strict=True)])

    def reap(self) -> list[Worker]:
        """Workers that exited since the last call, with their exit codes
        (negative: killed by that signal, as torch elastic reports them).
        The kernel names each exited child (waitid without reaping it), so
        a call costs what exited, not what runs: a Ctrl+C at --nproc 1024
        woke the loop for up to ~170 calls, each one waitpid per rank still
        running. A child not ours in the way (fakerun run inside a process
        with children of its own) sends us back to one waitpid per rank."""
        exited: list[Worker] = []
        while self._running:
            pid = _exited_child()
            if pid is None:  # none has exited
                return exited
            worker = self._running.get(pid)
            if worker is None:  # not ours, or no child at all (reaped by someone else)
                break
            self._exited(worker, _exit_code(pid) or 0, exited)
        for worker in list(self._running.values()):
            code = _exit_code(worker.pid)
            if code is not None:
                self._exited(worker, code, exited)
        return exited

    def _exited(self, worker: Worker, code: int, exited: list[Worker]) -> None:
        worker.exitcode = code
        del self._running[worker.pid]
        exited.append(worker)

    def running(self) -> list[Worker]:
        return list(self._running.values())

    def send(self, sig: signal.Signals, workers: list[Worker] | None = None) -> list[Worker]:
        """`sig` to each of `workers` (default: all) not yet reaped. A child
        we have not reaped keeps its pid (a zombie's too), so kill(2) reaches
        the rank itself: no identity check, which psutil does by reading
        /proc for each (a third of the time at 1024 ranks, the dying ranks
        around it busy)."""
        sent = []
        for worker in self.running() if workers is None else workers:
            if worker.exitcode is not None:
                continue
            try:
                os.kill(worker.pid, sig)
                sent.append(worker)
            except ProcessLookupError:  # reaped by someone else (SIGCHLD ignored): nothing to stop
                continue
        return sent

    def done(self) -> bool:
        return not self._running


def _fork_rank(spec: RankSpec, config: RunConfig, mask: set[signal.Signals], fork: Callable[[], int],
               started: list[int]) -> int:
    """The new rank's pid (the child runs the rank, never returning here).
    When the system refuses, the ranks `started` are stopped first."""
    try:
        pid = fork()
    except OSError as exc:
        _stop(started)
        stopped = f"; the {len(started)} ranks started were stopped" if started else ""
        raise ForkFailed(f"cannot start rank {spec.rank}: fork: {exc.strerror or exc} (ulimit -u, or "
                         f"the machine's pids or memory){stopped}") from None
    if pid == 0:
        run_child(spec, config, mask)
    return pid


def _stop(pids: list[int]) -> None:
    """Kill and reap ranks that never got to run: SIGKILL, as they hold no
    state yet, and it leaves them no time to write anything."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _exited_child() -> int | None:
    """The pid of a child that has exited and is not reaped yet (left so),
    None if none has; -1 if we have no child at all."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -1
    return info.si_pid if info is not None else None


def _exit_code(pid: int) -> int | None:
    """A forked child's exit code once it has exited (negative: the signal
    that killed it), reaping it; None while it runs. (psutil's wait(0) says
    "still running" by raising, and every raise leaves a traceback cycle for
    the GC: several a second in a long run.)"""
    try:
        pid_done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already: nothing more to learn
        return 0
    return os.waitstatus_to_exitcode(status) if pid_done else None
