"""What a job needs of this machine (processes, memory, open files),
checked before anything is written or forked.

world/topology.py and config/options.py bound the sizes any job may have; here they meet this machine.
A job that cannot fit is one usage error (exit 2) up front, not a traceback
or a libzmq abort half way through the launch. The figures per rank were
measured on the 2-core development machine with /proc/<pid>/{fd,task} and
psutil's memory_full_info, 8 and 64 ranks stepping at --speed 1.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fakerun.errors import UsageError
from fakerun.world.topology import Topology

# Every thread is a pid: a rank is its main thread plus libzmq's I/O and
# reaper threads (measured 3); the launcher as many, plus one to spare.
TASKS_PER_RANK = 3
TASKS_PER_LAUNCHER = 4
# A rank's USS measured 3.4-3.7 MiB and PSS 3.5-6.0 MiB once stepping (RSS
# 26-29 MiB is mostly pages shared with the launcher). Twice the USS covers
# what a long run dirties later, page tables and thread stacks. The
# launcher's RSS was 34 MiB with 8 ranks, and it grew 0.05 MiB a rank
# (USS 6.2 MiB with 8, 18.9 with 256).
RANK_MIB = 8.0
LAUNCHER_MIB = 40.0
LAUNCHER_MIB_PER_RANK = 0.1
# The launcher held 14 descriptors besides its ranks' (stdio, libzmq's
# epoll and eventfds, the ipc listener): 32 leaves room for --metrics-file,
# a checkpoint being written and the run dir's sweep. Per local rank it
# holds 3: its stdout.log and stderr.log, and its connection (8, 64 and 256
# ranks: 38, 206 and 782 in all); node 0 also holds one connection per rank
# and per agent of the other nodes (--nodes 2 --nproc 32: 147 and 76).
LAUNCHER_FDS = 32
FDS_PER_LOCAL_RANK = 3
# A rank held 10 (stdio, libzmq's eventfds, its socket); it inherits the
# launcher's limit, which must leave it room for its error file.
RANK_FDS = 16
# cgroup v1 writes "no limit" as a huge number (2^63 rounded down to a page).
UNLIMITED = 2.0**62


@dataclass(frozen=True)
class Need:
    """What a job's processes on this machine take."""

    ranks: int
    tasks: int
    memory_mib: float
    files: int  # in the process that holds the most: node 0's launcher


@dataclass(frozen=True)
class Room:
    """How much of a resource is left, and what bounds it (for the message)."""

    free: float
    bound: str


def need(topology: Topology, nodes_here: int = 1) -> Need:
    """`nodes_here`: how many of the job's nodes run on this machine
    (--nodes starts them all here; otherwise this agent's one)."""
    local = topology.nproc_per_node
    ranks = local * nodes_here
    files = LAUNCHER_FDS + FDS_PER_LOCAL_RANK * local
    if topology.node_rank == 0 or nodes_here > 1:  # node 0's coordinator: every other rank and agent
        files += topology.world_size - local + topology.nnodes - 1
    return Need(ranks, ranks * TASKS_PER_RANK + nodes_here * TASKS_PER_LAUNCHER,
                ranks * (RANK_MIB + LAUNCHER_MIB_PER_RANK) + nodes_here * LAUNCHER_MIB,
                max(files, RANK_FDS))


def check(topology: Topology, nodes_here: int = 1, machine: Machine | None = None) -> None:
    """UsageError (one line) unless the job fits; raises the soft
    open-files limit to the hard one when that is what it takes."""
    machine = machine or Machine()
    wanted = need(topology, nodes_here)
    tasks = machine.tasks()
    if wanted.tasks > tasks.free:
        raise UsageError(f"{wanted.ranks} ranks need {wanted.tasks} processes and threads, and this "
                          f"machine can start {max(0, int(tasks.free))} more ({tasks.bound})")
    memory = machine.memory_mib()
    if wanted.memory_mib > memory.free:
        raise UsageError(f"{wanted.ranks} ranks need about {wanted.memory_mib:.0f} MiB of memory "
                          f"({RANK_MIB:g} MiB each), and {max(0, memory.free):.0f} MiB is available "
                          f"({memory.bound})")
    fit_files(wanted, machine)


def fit_files(wanted: Need, machine: Machine) -> None:
    """Counted up front: past the limit, an open() fails half way through
    the launch, and libzmq aborts the process (ipc_listener.cpp:297)."""
    soft, hard = machine.files()
    if soft == resource.RLIM_INFINITY or wanted.files <= soft:
        return
    if hard == resource.RLIM_INFINITY or wanted.files <= hard:
        # As servers do: the soft limit is a default for the careless, the
        # hard one what the administrator allows. The ranks inherit it.
        machine.set_files(hard)
        return
    raise UsageError(f"{wanted.ranks} ranks need {wanted.files} open files, and the limit is {soft} "
                      f"(ulimit -n; hard limit {hard})")


@dataclass
class Machine:
    """This machine's figures, read when asked (tests give their own)."""

    proc: Path = Path("/proc")
    cgroups: Path = Path("/sys/fs/cgroup")
    uid: Callable[[], int] = os.getuid

    def tasks(self) -> Room:
        """Pids (threads count) that forks and libzmq may still take."""
        total = _number(self.proc / "loadavg", lambda t: t.split()[3].split("/")[1], 0)  # all tasks
        rooms = [Room(_number(self.proc / "sys/kernel/pid_max") - total, "kernel.pid_max"),
                 Room(_number(self.proc / "sys/kernel/threads-max") - total, "kernel.threads-max")]
        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
        if soft != resource.RLIM_INFINITY and self.uid() != 0:  # root is exempt from it
            rooms.append(Room(soft - self._user_tasks(), "ulimit -u"))
        left = self._cgroup("pids", ("pids.max", "pids.current"), ("pids.max", "pids.current"))
        rooms.append(Room(left, "the cgroup's pids.max"))
        return min(rooms, key=lambda r: r.free)

    def memory_mib(self) -> Room:
        available = _number(self.proc / "meminfo", lambda t: _field(t, "MemAvailable")) / 1024
        left = self._cgroup("memory", ("memory.max", "memory.current"),
                            ("memory.limit_in_bytes", "memory.usage_in_bytes"))
        return min(Room(available, "MemAvailable"), Room(left / 2**20, "the cgroup's memory limit"),
                   key=lambda r: r.free)

    def files(self) -> tuple[int, int]:
        return resource.getrlimit(resource.RLIMIT_NOFILE)

    def set_files(self, soft: int) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def _user_tasks(self) -> int:
        """RLIMIT_NPROC counts every thread of the real user's processes
        (0 where /proc cannot be read: the fork then says so itself)."""
        uid, count = self.uid(), 0
        try:
            entries = list(os.scandir(self.proc))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.name.isdigit() and entry.stat().st_uid == uid:
                    count += len(os.listdir(Path(entry.path) / "task"))
            except OSError:  # exited while we looked
                continue
        return count

    def _cgroup(self, controller: str, v2: tuple[str, str], v1: tuple[str, str]) -> float:
        """What is left under our cgroup's (limit, usage) files for
        `controller`, v2's names or v1's; infinite when unlimited or unknown."""
        try:
            lines = (self.proc / "self/cgroup").read_text(encoding="utf-8").splitlines()
        except OSError:
            return math.inf
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):  # v1: a hierarchy per controller
                folder, (limit, used) = self.cgroups / controller / path.lstrip("/"), v1
            elif not controllers:  # v2: the unified hierarchy
                folder, (limit, used) = self.cgroups / path.lstrip("/"), v2
            else:
                continue
            left = _number(folder / limit) - _number(folder / used, unknown=0)
            if left < UNLIMITED:
                return left
        return math.inf


def _number(path: Path, pick: Callable[[str], str] = str.strip, unknown: float = math.inf) -> float:
    """A figure from a /proc or /sys file, `unknown` when the file (or the
    figure) is not there: infinite for a bound, so that an unknown bound
    never refuses a job; 0 for a usage. cgroup v2 writes "max" for none."""
    try:
        text = pick(path.read_text(encoding="utf-8")).strip()
        return math.inf if text == "max" else float(int(text))
    except (OSError, ValueError, IndexError):
        return unknown


def _field(meminfo: str, name: str) -> str:
    """`MemAvailable:   24196000 kB` -> "24196000"."""
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.split()[0]
    return ""
