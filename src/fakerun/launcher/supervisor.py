"""Worker supervision: reaping this node's ranks, recording their failures,
and the teardown torch elastic does (SIGTERM to the group, a grace period,
then SIGKILL). Every event it has to say goes out through `emit`."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil

from fakerun import events as ev
from fakerun import failures
from fakerun.config.options import RunConfig
from fakerun.errors import ExitCode
from fakerun.launcher.workers import Worker
from fakerun.world.clock import VirtualClock
from fakerun.world.draws import rng

ABORT_WAIT_S = 2.0  # how long aborting ranks may take before SIGTERM goes out
# The launcher's teardown lines are written one after another, not in one
# instant: torch 2.13 (captured, 2 ranks on 2 cores) logs each `Sending
# process` 0-1 ms after the last, and `failed (exitcode: …)` 36-40 ms after
# them (close() waits for the signalled workers to exit).
LINE_GAP_S = (0.0001, 0.0012)
CLOSE_WAIT_S = (0.030, 0.045)


class Workers(Protocol):
    """This node's ranks as the supervisor drives them (launcher.workers.WorkerGroup)."""

    def reap(self) -> list[Worker]: ...

    def running(self) -> list[Worker]: ...

    def send(self, sig: signal.Signals, workers: list[Worker] | None = None) -> list[Worker]: ...

    def done(self) -> bool: ...


@dataclass
class Stop:
    reason: str  # failure | signal | output | output-failed | rendezvous | error
    kill_at: float
    signal: int
    killed: bool = False


class Supervisor:
    def __init__(self, config: RunConfig, group: Workers, clock: VirtualClock,
                 monotonic: Callable[[], float], emit: Callable[[ev.Event], None]) -> None:
        self.config, self.group, self.clock = config, group, clock
        self.monotonic, self.emit = monotonic, emit
        self.topo = config.topology
        self.failures: list[ev.Failure] = []
        self.stop: Stop | None = None
        self.exited_ok: list[ev.RankExited] = []  # announced in rank order at the end
        self.expected_aborts: set[int] = set()
        self.abort_deadline = 0.0
        self._draws = rng(config.seed, "teardown-lines", self.topo.node_rank, clock.now)
        self._last_line = -math.inf

    def reap(self, on_failure: Callable[[], None]) -> None:
        """Exited ranks, one pass in rank order (reap order is the scheduler's).
        The failures of a pass are all seen before the teardown they start,
        as torch elastic's _poll takes every exit code before close(): which
        of two ranks that aborted together is reaped first must not decide
        whether the other is listed (data/torchrun.toml [failures])."""
        failed = False
        for worker in sorted(self.group.reap(), key=lambda w: w.rank):
            code, node = worker.exitcode or 0, self.topo.node_rank
            exited = ev.RankExited(worker.rank, worker.local_rank, node, self.pid(worker), code)
            if code == 0 or self.stop is not None:  # held, to come in rank order
                self.exited_ok.append(exited)
                if code == 0:
                    continue
            else:
                self.emit(exited)
            if code == ExitCode.INTERNAL:  # a fakerun bug, not a simulated fault: show its traceback
                self.emit(ev.RankOutput(worker.rank, "stderr", _tail(worker.spec.stderr_path),
                                        reported_by=self.topo.node_rank))
            self.failures.append(self._failure(worker, code))
            failed = True
        if failed and self.stop is None and not self.awaiting_aborts():
            on_failure()

    def expect_exits(self, ranks: set[int]) -> None:
        self.expected_aborts = ranks & set(self.config.agents.node_ranks())  # the ranks this agent runs
        self.abort_deadline = self.monotonic() + ABORT_WAIT_S

    def awaiting_aborts(self) -> bool:
        """After a watchdog timeout, the waiting ranks abort on their own: let
        them (bounded) before SIGTERM races them, as their failures decide the
        report."""
        if self.monotonic() >= self.abort_deadline:
            return False
        return any(w.rank in self.expected_aborts for w in self.group.running())

    def first_failure(self) -> ev.Failure:
        # Several ranks may have failed before the teardown (a watchdog's
        # simultaneous aborts): which was reaped first is the scheduler's
        # choice; rank order is ours.
        self.failures.sort(key=lambda f: f.rank)
        return self.failures[0]

    def begin_stop(self, reason: str, sig: signal.Signals) -> None:
        self.stop = Stop(reason, self.monotonic() + self.config.shutdown_grace_s, int(sig))
        # The lines first, while the ranks are still (blocked in their
        # collectives, so) idle: after the signals, a launcher writing 1024
        # of them shares the CPU with 1024 ranks being torn down. Measured at
        # --nproc 1024 (6 interleaved rounds each): lines first 1.16 s median
        # from SIGINT to exit, signals first 1.24 s, interleaved 1.23 s; no
        # more than this shared machine's noise, so torchrun's order stays.
        for worker in self.group.running():
            self.emit(ev.ClosingSignal(worker.rank, worker.local_rank, self.pid(worker), sig.name,
                                       self._line_time(LINE_GAP_S)))
        self.group.send(sig)

    def hurry(self) -> None:
        """A second stop signal: no more grace."""
        if self.stop is not None and not self.stop.killed:
            self.stop.kill_at = self.monotonic()

    def kill_if_due(self, now: float) -> None:
        if self.stop is not None and not self.stop.killed and now >= self.stop.kill_at:
            self.stop.killed = True
            for worker in self.group.running():
                self.emit(ev.ForcedKill(worker.rank, self.pid(worker), self._line_time(LINE_GAP_S),
                                        self.stop.signal))
            self.group.send(signal.SIGKILL)

    def failed_at(self) -> float:
        """When torch elastic logs the group's failure: after close() has
        waited for the workers it signalled."""
        return self._line_time(CLOSE_WAIT_S if self.stop is not None and self._last_line > -math.inf
                               else LINE_GAP_S)

    def _line_time(self, gap: tuple[float, float]) -> float:
        """A launcher line's time: a seeded gap after the last one's (so
        that --start-time runs stay byte-identical), never before now."""
        self._last_line = max(self.clock(), self._last_line + self._draws.uniform(*gap))
        return self._last_line

    def next_deadline(self) -> float | None:
        """When the loop must wake for the supervisor, if sooner than its own rhythm."""
        if self.stop is None:
            return self.abort_deadline if self.failures else None
        return None if self.stop.killed else self.stop.kill_at

    def kill_leftovers(self) -> None:
        """Whatever path got us here, no rank outlives the launcher."""
        if self.group.running():
            self.group.send(signal.SIGKILL)
            for worker in self.group.running():
                with contextlib.suppress(psutil.Error):
                    worker.proc.wait(timeout=5)

    def pid(self, worker: Worker) -> int:
        return worker.spec.display_pid or worker.pid

    def _failure(self, worker: Worker, code: int) -> ev.Failure:
        failure = ev.Failure(worker.rank, worker.local_rank, self.topo.node_rank, self.pid(worker), code,
                             self.clock(), self.config.identity.host(worker.rank),
                             after_close=self.stop is not None)
        return failures.read(failure, worker.spec.env.get(failures.ERROR_FILE_ENV, ""))


def _tail(path: str, lines: int = 40) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []
