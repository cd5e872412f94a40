"""The worker group: its fork, when the system stops giving processes, and its reaping."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
from fakerun.launcher.workers import ForkFailed, Worker, WorkerGroup
from fakerun.rank.process import RankSpec
from fakerun.world.topology import Topology


def refusing_after(started: int, pids: list[int]) -> Callable[[], int]:
    """os.fork for `started` calls (recording the pids), then EAGAIN, as
    Python raises it when `ulimit -u` or the pids run out."""
    def fork() -> int:
        if len(pids) == started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = os.fork()
        if pid:
            pids.append(pid)
        return pid
    return fork


def specs(tmp_path: Path, count: int) -> list[RankSpec]:
    return [RankSpec(r, r, 0, f"ipc://{tmp_path}/nobody-listens", "token", "run", {}, os.getpid(),
                     str(tmp_path / f"{r}.out"), str(tmp_path / f"{r}.err"), 0) for r in range(count)]


def test_a_refused_fork_stops_the_ranks_started(tmp_path: Path):
    pids: list[int] = []
    with pytest.raises(ForkFailed, match=r"^cannot start rank 2: fork: Resource temporarily unavailable "
                                         r".*the 2 ranks started were stopped$"):
        WorkerGroup.fork(specs(tmp_path, 4), plan(RunConfig(Topology(1, 4), max_steps=3)),
                         refusing_after(2, pids))
    assert len(pids) == 2
    for pid in pids:  # killed and reaped already: not even a zombie is left
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    for path in tmp_path.glob("*.err"):  # the ranks said nothing
        assert path.read_text() == ""


def child(code: int | None) -> int:
    """A forked child that exits with `code` at once (None: waits to be killed)."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # dies of it, as a rank does
            if code is None:
                signal.pause()
        finally:
            os._exit(code or 0)
    return pid


def group_of(tmp_path: Path, pids: list[int]) -> WorkerGroup:
    return WorkerGroup([Worker(spec, psutil.Process(pid)) for spec, pid in zip(specs(tmp_path, len(pids)), pids,
                                                                                strict=True)])


def exited_all(group: WorkerGroup, count: int) -> list[tuple[int, int]]:
    """Reap until `count` have exited: (rank, exit code) in rank order."""
    found: list[Worker] = []
    deadline = time.monotonic() + 10
    while len(found) < count and time.monotonic() < deadline:
        found += group.reap()
        time.sleep(0.01)
    return sorted((w.rank, w.exitcode) for w in found)


def test_reap_finds_each_exit_with_its_code_and_leaves_the_running(tmp_path: Path):
    pids = [child(0), child(None), child(3), child(None)]
    group = group_of(tmp_path, pids)
    try:
        assert exited_all(group, 2) == [(0, 0), (2, 3)]
        assert [w.rank for w in group.running()] == [1, 3] and not group.done()
        group.send(signal.SIGINT)
        assert exited_all(group, 2) == [(1, -2), (3, -2)]
        assert group.done() and group.reap() == []
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def test_reap_gets_past_an_exited_child_that_is_not_a_rank(tmp_path: Path):
    """fakerun inside a process with children of its own (fakerun.run's
    caller does not share its process, but a test may): that child's exit is
    left for its owner to collect, and the ranks' exits are still found."""
    foreign = child(5)
    time.sleep(0.2)  # exited first: the kernel names it before ours
    pids = [child(7), child(None)]
    group = group_of(tmp_path, pids)
    try:
        assert exited_all(group, 1) == [(0, 7)]
        assert os.waitpid(foreign, 0)[1] >> 8 == 5  # still there for its owner
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
