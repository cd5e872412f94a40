"""The job loop (launcher/job.py) driven by fakes, in the manner of honcho's
manager tests: a fake link to the coordinator, fake workers and a fake clock
are given a history (what the coordinator says when, which rank exits when,
which signal comes when), and the test reads the events the loop showed and
the exit code it chose. No process, socket or sleep: each runs in
milliseconds, and the poll's timeout is where fake time passes."""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from fakerun import events as ev
from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
from fakerun.errors import ExitCode
from fakerun.launcher.edges import IO, Edges
from fakerun.launcher.job import POLLIN, Job
from fakerun.launcher.workers import ForkFailed, Worker
from fakerun.rank.process import RankSpec
from fakerun.render.renderer import OutputState
from fakerun.world.topology import Topology

INBOX_FD = 1000
SOCKET = object()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Proc:
    """psutil.Process, as far as the supervisor uses it."""

    pid: int

    def wait(self, timeout: float) -> None:
        pass


@dataclass
class History:
    """What happens when: (time after start, what)."""

    said: list[tuple[float, ev.Event]] = field(default_factory=list)  # by the coordinator
    exits: dict[int, tuple[float, int]] = field(default_factory=dict)  # rank -> (when, exit code)
    signals: list[tuple[float, int]] = field(default_factory=list)  # to the launcher
    # How a rank answers a signal sent to it: exit with this code this long after.
    on_signal: dict[int, tuple[float, int]] = field(default_factory=lambda: {
        signal.SIGTERM: (0.05, -signal.SIGTERM), signal.SIGINT: (0.05, -signal.SIGINT),
        signal.SIGKILL: (0.0, -signal.SIGKILL)})
    ready: bool = True  # the rendezvous completes at once


class World:
    """The fakes, sharing one clock and one history."""

    def __init__(self, history: History, ranks: int) -> None:
        self.history, self.clock = history, Clock()
        self.start = self.clock.now
        self.exits = {r: (self.start + t, c) for r, (t, c) in history.exits.items()}
        self.said = sorted(((self.start + t, e) for t, e in history.said), key=lambda x: x[0])
        self.signals = sorted((self.start + t, s) for t, s in history.signals)
        self.pending: list[int] = []  # signals delivered, not yet taken
        self.sent: list[tuple[int, int]] = []  # (rank, signal) the supervisor sent
        self.sent_at: list[float] = []  # when, after the start
        self.workers: list[Worker] = []
        self.ranks = ranks

    # -- the poll: where fake time passes ------------------------------
    def poll(self, items: list[tuple[Any, int]], timeout_ms: int) -> list[tuple[Any, int]]:
        deadline = self.clock.now + timeout_ms / 1000
        due = [t for t in (self._next_said(), self._next_signal(), self._next_exit()) if t is not None]
        if not self.pending:  # what is already there wakes the poll at once
            self.clock.now = max(self.clock.now, min([deadline, *due]))
        self._deliver()
        ready = []
        if self.said and self.said[0][0] <= self.clock.now:
            ready.append((SOCKET, POLLIN))
        if self.pending:
            ready.append((INBOX_FD, POLLIN))
        return ready

    def _next_said(self) -> float | None:
        return self.said[0][0] if self.said else None

    def _next_signal(self) -> float | None:
        return self.signals[0][0] if self.signals else None

    def _next_exit(self) -> float | None:
        alive = [w for w in self.workers if w.exitcode is None]
        return min((self.exits[w.rank][0] for w in alive if w.rank in self.exits), default=None)

    def _deliver(self) -> None:
        while self.signals and self.signals[0][0] <= self.clock.now:
            self.pending.append(self.signals.pop(0)[1])
        for worker in self.workers:
            if worker.exitcode is None and worker.rank in self.exits and self.exits[worker.rank][0] <= self.clock.now:
                worker.exitcode = self.exits.pop(worker.rank)[1]
                self.pending.append(signal.SIGCHLD)


class FakeWorkers:
    def __init__(self, world: World, specs: list[RankSpec]) -> None:
        self.world = world
        world.workers = [Worker(spec, Proc(5000 + spec.rank)) for spec in specs]  # type: ignore[arg-type]
        self.reaped: set[int] = set()

    def reap(self) -> list[Worker]:
        world = self.world
        world._deliver()
        done = [w for w in world.workers if w.exitcode is not None and w.rank not in self.reaped]
        self.reaped.update(w.rank for w in done)
        return done

    def running(self) -> list[Worker]:
        return [w for w in self.world.workers if w.exitcode is None]

    def send(self, sig: signal.Signals, workers: list[Worker] | None = None) -> list[Worker]:
        targets = self.running() if workers is None else workers
        for worker in targets:
            self.world.sent.append((worker.rank, int(sig)))
            self.world.sent_at.append(self.world.clock.now - self.world.start)
            delay, code = self.world.history.on_signal.get(int(sig), (None, 0))
            if delay is not None:
                when = self.world.clock.now + delay
                current = self.world.exits.get(worker.rank)
                if current is None or current[0] > when:
                    self.world.exits[worker.rank] = (when, code)
        if int(sig) == signal.SIGKILL:  # no grace: gone before send returns
            self.world._deliver()
        return targets

    def done(self) -> bool:
        return not self.running() and len(self.reaped) == len(self.world.workers)


class FakeHub:
    def __init__(self, world: World) -> None:
        self.world = world
        self.socket = SOCKET
        self.ready = world.history.ready
        self.steps = 0
        self.lingering = False
        self.stop_requested = False
        self.failures: list[str] = []

    def joined(self) -> list[int]:
        return list(range(self.world.ranks)) if self.ready else [0]

    def missing_nodes(self) -> list[int]:
        return []

    def receive(self, now: float) -> list[ev.Event]:
        out = []
        while self.world.said and self.world.said[0][0] <= now:
            event = self.world.said.pop(0)[1]
            self.ready = self.ready or isinstance(event, ev.RendezvousComplete)
            out.append(event)
        return out

    def tick(self, now: float) -> list[ev.Event]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def request_stop(self) -> list[ev.Event]:
        self.stop_requested = True
        return []

    def local_failure(self, detail: str) -> list[ev.Event]:
        self.failures.append(detail)
        return []

    def finished(self) -> None:
        pass

    def flush_output(self) -> list[ev.Event]:
        return []

    def rejected(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class FakeInbox:
    def __init__(self, world: World) -> None:
        self.world = world

    def fileno(self) -> int:
        return INBOX_FD

    def take(self) -> list[int]:
        taken, self.world.pending = self.world.pending, []
        return taken


class FakeView:
    def __init__(self, clock: Clock, closed_at: float | None = None, fails_at: float | None = None) -> None:
        self.events: list[ev.Event] = []
        self.shown_at: list[float] = []  # each event's fake time
        self.clock, self.closed_at, self.fails_at = clock, closed_at, fails_at
        self.failure = ""

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        self.shown_at.append(self.clock.now)

    def fail(self, message: str) -> None:
        self.failure = self.failure or message

    def flush(self, force: bool = False) -> OutputState:
        if self.fails_at is not None and self.clock.now >= self.fails_at:
            self.fail("--metrics-file m.jsonl: No space left on device")
        return OutputState(self.closed_at is not None and self.clock.now >= self.closed_at, self.failure)

    def open_rank_logs(self, paths: dict[int, tuple[str, str]], where: str = "") -> None:
        pass

    def close_rank_logs(self) -> None:
        pass


class FakeContext:
    def destroy(self, linger: int = 0) -> None:
        pass


@dataclass
class FakeRunDir:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root

    def endpoint(self) -> str:
        return "ipc://" + str(self.root / "c.sock")

    def rank_logs(self, attempt: int, local_rank: int, kept: int = 3) -> tuple[Path, Path]:
        return self.root / f"{local_rank}.out", self.root / f"{local_rank}.err"

    def error_file(self, attempt: int, local_rank: int) -> Path:
        return self.root / f"{local_rank}.json"


@dataclass
class Outcome:
    code: int
    events: list[ev.Event]
    world: World
    hub: FakeHub
    job: Job

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def run(history: History, tmp_path: Path, nproc: int = 2, fork_fails: bool = False,
        closed_at: float | None = None, fails_at: float | None = None, restartable: bool = False,
        connect_fails: bool = False, **options: Any) -> Outcome:
    config = plan(RunConfig(Topology(1, nproc), seed=5, max_steps=3, start_time="2026-01-01T00:00:00",
                            **options))
    world = World(history, nproc)
    hub = FakeHub(world)

    def fork(specs: list[RankSpec], _config: RunConfig) -> FakeWorkers:
        if fork_fails:
            raise ForkFailed("cannot start rank 1: Resource temporarily unavailable")
        return FakeWorkers(world, specs)

    def at(t: float | None) -> float | None:
        return None if t is None else world.start + t

    def connect(ctx: Any, endpoints: list[str]) -> FakeHub:
        if connect_fails:
            raise zmq.ZMQError(errno.EADDRINUSE)
        return hub

    view = FakeView(world.clock, at(closed_at), at(fails_at))
    edges = Edges(fork=fork, context=FakeContext, poll=world.poll, connect=connect)
    io = IO(monotonic=world.clock, environ={})
    job = Job(config, io, FakeInbox(world), view, None, FakeRunDir(tmp_path),  # type: ignore[arg-type]
              restartable=restartable, edges=edges)
    code = job.run()
    return Outcome(code, view.events, world, hub, job)


def names(events: list[ev.Event]) -> list[str]:
    return [type(e).NAME for e in events]


def test_a_healthy_run_ends_with_every_rank_in_rank_order_and_exit_0(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001])),
                            (0.5, ev.Phase("train", "", 0, 1.0))],
                      exits={1: (1.0, 0), 0: (1.2, 0)})
    out = run(history, tmp_path)
    assert out.code == ExitCode.OK
    assert names(out.events) == ["run_started", "run_identity", "rendezvous", "phase",
                                 "rank_exited", "rank_exited", "run_finished"]
    assert [e.rank for e in out.of(ev.RankExited)] == [0, 1]
    assert out.of(ev.RunFinished)[0].exit_code == 0
    assert out.world.sent == []


def test_a_failed_rank_stops_the_others_and_is_the_root_cause(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))], exits={1: (0.5, 1)})
    out = run(history, tmp_path)
    assert out.code == ExitCode.FAILED
    assert out.world.sent == [(0, signal.SIGTERM)]
    assert out.hub.failures == ["rank 1 exited with code 1"]
    first_exit = out.of(ev.RankExited)[0]
    assert (first_exit.rank, first_exit.exitcode) == (1, 1)  # shown at once, not held
    assert [e.rank for e in out.of(ev.ClosingSignal)] == [0]
    failed = out.of(ev.RunFailed)[0]
    assert failed.root.rank == 1
    assert [(f.rank, f.exitcode) for f in failed.others] == [(0, -signal.SIGTERM)]
    assert names(out.events)[-2:] == ["run_failed", "run_finished"]


def test_ctrl_c_asks_every_rank_to_stop_and_exits_1(tmp_path: Path) -> None:
    """torchrun's SignalException goes uncaught out of its main: exit 1
    (torch/distributed/elastic/multiprocessing/api.py, v2.3.1 to v2.13.0)."""
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))],
                      signals=[(0.4, signal.SIGINT)])
    out = run(history, tmp_path)
    assert out.code == ExitCode.FAILED
    assert out.hub.stop_requested
    assert out.of(ev.ShutdownRequested)[0].signal == signal.SIGINT
    assert sorted(out.world.sent) == [(0, signal.SIGINT), (1, signal.SIGINT)]
    assert not out.of(ev.RunFailed) and out.of(ev.RunFinished)[0].exit_code == 1


def test_ranks_that_ignore_sigterm_are_killed_after_the_grace(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))], exits={1: (0.5, 1)})
    history.on_signal[signal.SIGTERM] = (None, 0)  # rank 0 does not die of it
    out = run(history, tmp_path, shutdown_grace_s=3.0)
    assert out.code == ExitCode.FAILED
    assert out.world.sent == [(0, signal.SIGTERM), (0, signal.SIGKILL)]
    killed = out.of(ev.ForcedKill)
    assert [(k.rank, k.signal) for k in killed] == [(0, signal.SIGTERM)]
    assert out.world.sent_at[1] == pytest.approx(0.5 + 3.0, abs=0.01)  # the grace, and not a moment more


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))],
                      signals=[(0.4, signal.SIGINT), (0.45, signal.SIGINT)])
    history.on_signal[signal.SIGINT] = (None, 0)  # the ranks carry on
    out = run(history, tmp_path, shutdown_grace_s=30.0)
    assert out.code == ExitCode.FAILED
    assert sorted(r for r, s in out.world.sent if s == signal.SIGKILL) == [0, 1]
    assert out.world.clock.now - out.world.start < 1.0  # not the 30 s grace


def test_a_rendezvous_that_never_completes_times_out(tmp_path: Path) -> None:
    out = run(History(ready=False), tmp_path, rdzv_timeout_s=20.0)
    assert out.code == ExitCode.FAILED
    timeout = out.of(ev.RendezvousTimeout)[0]
    assert (timeout.timeout_s, timeout.world_size) == (20.0, 2)
    assert out.world.sent_at[0] == pytest.approx(20.0, abs=0.01)
    assert out.world.sent[:2] == [(0, signal.SIGTERM), (1, signal.SIGTERM)]


def test_after_a_watchdog_timeout_the_waiting_ranks_abort_before_any_sigterm(tmp_path: Path) -> None:
    watchdog = ev.WatchdogTimeout("world", 7, "all_reduce", 2, 600000, 600010, [0], [1], 5.0)
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001])), (0.5, watchdog)],
                      exits={1: (0.55, 1), 0: (1.5, -signal.SIGABRT)})
    out = run(history, tmp_path)
    assert out.code == ExitCode.FAILED
    # rank 1 failed first, but rank 0 was left its abort (ABORT_WAIT_S): both are in the report.
    assert out.world.sent == []
    failed = out.of(ev.RunFailed)[0]
    assert sorted([failed.root.rank, *[f.rank for f in failed.others]]) == [0, 1]


def test_a_reader_that_goes_away_ends_the_job_with_141(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))])
    out = run(history, tmp_path, closed_at=0.3)
    assert out.code == ExitCode.PIPE
    assert sorted(out.world.sent) == [(0, signal.SIGTERM), (1, signal.SIGTERM)]
    assert out.of(ev.RunFinished)[0].exit_code == 141


def test_a_fork_that_fails_says_so_and_exits_1(tmp_path: Path) -> None:
    out = run(History(), tmp_path, fork_fails=True)
    assert out.code == ExitCode.FAILED
    assert names(out.events) == ["run_started", "run_identity", "agent_error"]


@pytest.mark.parametrize("restartable", [True, False])
def test_a_restartable_failure_is_not_reported(tmp_path: Path, restartable: bool) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))], exits={0: (0.5, 1)})
    out = run(history, tmp_path, restartable=restartable)
    assert out.job.restartable_failure() is restartable
    assert bool(out.of(ev.RunFailed)) is not restartable
    assert bool(out.of(ev.RunFinished)) is not restartable
    # torch elastic logs `failed (exitcode: …)` for every attempt, the report for the last only.
    assert [e.root.rank for e in out.of(ev.AttemptFailed)] == ([0] if restartable else [])


def test_the_teardown_lines_step_by_seeded_gaps(tmp_path: Path) -> None:
    """Sending process lines 0.1-1.2 ms apart, the failed line 30-45 ms after
    them (torch 2.13, captured): not one instant, and the same for a seed
    (at --speed 0: at a pace, the wall clock says when the ranks were gone)."""
    def times() -> list[float]:
        history = History(said=[(0.1, ev.RendezvousComplete(3, [0, 1, 2], [5000, 5001, 5002]))],
                          exits={0: (0.5, 1)})
        out = run(history, tmp_path, nproc=3, speed=0.0)
        return [e.time for e in out.of(ev.ClosingSignal)] + [out.of(ev.RunFailed)[0].time]
    first = times()
    closing, failed_at = first[:-1], first[-1]
    assert len(closing) == 2 and 0.0001 <= closing[1] - closing[0] <= 0.0012
    assert 0.030 <= failed_at - closing[-1] <= 0.045
    assert times() == first


def test_a_port_that_cannot_be_used_is_an_agent_error_and_exit_1(tmp_path: Path) -> None:
    out = run(History(), tmp_path, connect_fails=True)
    assert out.code == ExitCode.FAILED
    assert out.of(ev.AgentError)[0].message.startswith("cannot use 127.0.0.1:")
    assert not out.of(ev.RunFinished)


def test_a_nan_loss_lets_every_rank_stop_on_its_own(tmp_path: Path) -> None:
    nan = ev.Step(3, 10, float("nan"), 0.0, 0.0, 0.0)
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001])), (0.3, nan)],
                      exits={0: (0.4, 1), 1: (1.2, 1)})
    out = run(history, tmp_path)
    assert out.code == ExitCode.FAILED
    assert out.world.sent == []  # no SIGTERM raced the ranks' own exit
    failed = out.of(ev.RunFailed)[0]
    assert sorted([failed.root.rank, *[f.rank for f in failed.others]]) == [0, 1]


def test_a_checkpoint_is_where_a_restart_resumes(tmp_path: Path) -> None:
    saved = ev.Checkpoint(4, 1, str(tmp_path / "checkpoint-4"), 1, 0, 0, 0.5, 1_800_000_000.0)
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001])), (0.3, saved)],
                      exits={0: (0.5, 0), 1: (0.5, 0)})
    out = run(history, tmp_path)
    assert (out.job.last_checkpoint.step, out.job.last_checkpoint.time) == (4, 1_800_000_000.0)


def test_a_file_that_cannot_be_written_stops_the_job_with_one_line(tmp_path: Path) -> None:
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001]))])
    out = run(history, tmp_path, fails_at=0.3)
    assert out.code == ExitCode.FAILED
    assert [e.message for e in out.of(ev.OutputFailed)] == ["--metrics-file m.jsonl: No space left on device"]
    assert sorted(out.world.sent) == [(0, signal.SIGTERM), (1, signal.SIGTERM)]


def test_node_0_lost_ends_another_node_s_job(tmp_path: Path) -> None:
    lost = ev.NodeLost(0, "gpu-node-00", "silent", "no heartbeat", 5.0)
    history = History(said=[(0.1, ev.RendezvousComplete(2, [0, 1], [5000, 5001])), (0.4, lost)])
    out = run(history, tmp_path)
    assert out.code == ExitCode.FAILED
    assert sorted(out.world.sent) == [(0, signal.SIGTERM), (1, signal.SIGTERM)]
    assert out.world.sent_at[0] == pytest.approx(0.4, abs=0.01)
