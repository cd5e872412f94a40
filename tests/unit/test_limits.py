"""What a job needs of the machine, against figures the tests write
themselves (a /proc and a cgroup tree in tmp_path)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fakerun.config import limits
from fakerun.errors import UsageError
from fakerun.world.topology import Topology


@dataclass
class FakeMachine(limits.Machine):
    """/proc and /sys/fs/cgroup from tmp_path; an open-files limit of its own."""

    limit: tuple[int, int] = (1024, 4096)
    raised_to: list[int] = field(default_factory=list)

    def files(self) -> tuple[int, int]:
        return self.limit

    def set_files(self, soft: int) -> None:
        self.raised_to.append(soft)
        self.limit = (soft, self.limit[1])


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    write(proc, {"loadavg": "0.50 0.40 0.30 2/900 12345\n", "sys/kernel/pid_max": "4000\n",
                 "sys/kernel/threads-max": "100000\n",
                 "meminfo": "MemTotal: 4096000 kB\nMemAvailable: 2048000 kB\n",
                 "self/cgroup": "4:memory:/job\n1:name=systemd:/\n0::/job\n"})
    proc.joinpath("1").mkdir()
    return FakeMachine(proc, cgroups, uid=lambda: 0)


def test_need_counts_what_was_measured():
    one = limits.need(Topology(1, 8))
    assert (one.ranks, one.tasks, one.files) == (8, 8 * 3 + 4, 32 + 8 * 3)
    assert one.memory_mib == pytest.approx(8 * 8.1 + 40)
    # Node 0 of two also holds the other node's 8 ranks' connections and its agent's.
    assert limits.need(Topology(2, 8, 0)).files == 32 + 8 * 3 + 8 + 1
    assert limits.need(Topology(2, 8, 1)).files == 32 + 8 * 3
    # --nodes 2: both nodes' ranks run here; the files are node 0's launcher's.
    both = limits.need(Topology(2, 8, 0), nodes_here=2)
    assert (both.ranks, both.tasks, both.files) == (16, 16 * 3 + 2 * 4, 32 + 8 * 3 + 8 + 1)


def test_tasks_name_the_tightest_bound(machine: FakeMachine):
    assert machine.tasks() == limits.Room(3100, "kernel.pid_max")
    write(machine.cgroups, {"job/pids.max": "500\n", "job/pids.current": "120\n"})  # v2
    assert machine.tasks() == limits.Room(380, "the cgroup's pids.max")


def test_memory_names_the_tightest_bound(machine: FakeMachine):
    assert machine.memory_mib() == limits.Room(2000, "MemAvailable")
    write(machine.cgroups, {"memory/job/memory.limit_in_bytes": str(600 << 20),  # v1
                            "memory/job/memory.usage_in_bytes": str(100 << 20)})
    assert machine.memory_mib() == limits.Room(500, "the cgroup's memory limit")
    write(machine.cgroups, {"memory/job/memory.limit_in_bytes": "9223372036854771712"})  # v1's "none"
    assert machine.memory_mib() == limits.Room(2000, "MemAvailable")


def test_figures_not_there_refuse_nothing(tmp_path: Path):
    bare = FakeMachine(tmp_path / "none", tmp_path / "none")
    assert bare.tasks().free == math.inf and bare.memory_mib().free == math.inf
    limits.check(Topology(1, 1000), machine=bare)


def test_too_many_ranks_for_the_pids(machine: FakeMachine):
    with pytest.raises(UsageError, match=r"^1100 ranks need 3304 processes and threads, and this machine "
                                          r"can start 3100 more \(kernel.pid_max\)$"):
        limits.check(Topology(1, 1100), machine=machine)


def test_too_many_ranks_for_the_memory(machine: FakeMachine):
    with pytest.raises(UsageError, match=r"^250 ranks need about 2065 MiB of memory \(8 MiB each\), and "
                                          r"2000 MiB is available \(MemAvailable\)$"):
        limits.check(Topology(1, 250), machine=machine)


def test_the_soft_open_files_limit_is_raised_to_the_hard_one_when_that_is_enough(machine: FakeMachine):
    machine.limit = (40, 4096)
    limits.check(Topology(1, 64), machine=machine)
    assert machine.raised_to == [4096]
    machine.limit, machine.raised_to = (1024, 4096), []
    limits.check(Topology(1, 64), machine=machine)
    assert machine.raised_to == []  # enough already: left as it is


def test_too_few_open_files_even_at_the_hard_limit(machine: FakeMachine):
    machine.limit = (40, 200)
    with pytest.raises(UsageError, match=r"^64 ranks need 224 open files, and the limit is 40 "
                                          r"\(ulimit -n; hard limit 200\)$"):
        limits.check(Topology(1, 64), machine=machine)
    assert machine.raised_to == []
