"""The local worker group: forked rank processes, supervised with psutil.

Ranks are forked, not exec'd: on this 2-core machine fork takes ~0.03 s for
8 ranks against ~0.4 s for fresh interpreters (reference/measured-limits.md),
which is what lets the first rank line appear within 0.4 s. The first group
is forked before the launcher creates its zmq Context or any thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from .config import RunConfig
from .rank import FORK_BLOCKED, RankSpec, run_child
from .render.console import silence


class ForkFailed(RuntimeError):
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
        (negative: killed by that signal, as torch elastic reports them)."""
        exited = []
        for worker in self.running():
            code = _exit_code(worker.proc.pid)
            if code is not None:
                worker.exitcode = code
                exited.append(worker)
        return exited

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.exitcode is None]

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
        return not self.running()


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
