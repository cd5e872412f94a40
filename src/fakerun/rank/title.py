"""The rank's process title: what `ps`, `top` and /proc show of a real
worker. torchrun starts each worker as `[PYTHON_EXEC or sys.executable] -u
<training_script> <script args>` (torch/distributed/run.py config_from_args:
`cmd = os.getenv("PYTHON_EXEC", sys.executable)`, `cmd_args.append("-u")`,
read in the 2.13.0 wheel), so /proc/<pid>/comm is that executable's base
name. A forked rank would otherwise show the launcher's command line
(`python3 …/fakerun --nproc 2 …`).

setproctitle rewrites the argv area in place, and by default the environment
area after it too, which left /proc/<pid>/environ all NULs: SPT_NOENV keeps
it to the argv area (the launcher's own command line, longer than the title,
`-m fakerun` or the script's path against `-u`, unless PYTHON_EXEC names a
longer interpreter: the title is then cut short), so /proc/<pid>/environ
still shows the environment the rank started with. The kernel shows the title
as one argument (its words split by spaces, as psutil splits them) if the
area's last byte is not NUL, else the whole area, padding included: that byte
is set here (proc(5), /proc/pid/cmdline; fs/proc/base.c get_mm_cmdline).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Sequence

from fakerun.config.launch import Launch

try:  # imported by the launcher before it forks: a rank pays only for the call
    import setproctitle
except ImportError:  # a dependency (pyproject.toml); without it a rank keeps the launcher's title
    setproctitle = None  # type: ignore[assignment]

PR_SET_NAME = 15
COMM_MAX = 15  # TASK_COMM_LEN less its NUL
STAT_MAX = 4096  # /proc/<pid>/stat is one line of 52 fields
ARG_FIELDS = (48, 49)  # /proc/<pid>/stat's arg_start and arg_end (proc(5)), 1-based


def command(entrypoint: str, script_args: Sequence[str], environ: dict[str, str] | None = None,
            launch: Launch | None = None, local_rank: int = 0) -> list[str]:
    """A real worker's argv, as the launch line's -m, --no-python or --run-path starts it."""
    env = os.environ if environ is None else environ
    # A --run-path worker's descriptors, as multiprocessing hands a spawned
    # child its resource tracker's and its own pipe's (a `ps` sample of a
    # parent's children: tracker_fd=8, pipe_handle=12, each next child 2 more).
    fds = (8, 12 + 2 * local_rank)
    return (launch or Launch()).command(env.get("PYTHON_EXEC", sys.executable), entrypoint, list(script_args),
                                        list(sys.argv), fds)


def show(argv: list[str], libc: ctypes.CDLL) -> None:
    """Take `argv` as this process's title, and its executable's name as its comm."""
    if setproctitle is None:
        return
    title = " ".join(argv)
    os.environ["SPT_NOENV"] = "1"  # read by setproctitle's set-up, at its first call (here)
    try:
        setproctitle.setproctitle(title)
    finally:
        del os.environ["SPT_NOENV"]
    _one_argument(len(os.fsencode(title)))
    libc.prctl(PR_SET_NAME, os.path.basename(argv[0]).encode()[:COMM_MAX], 0, 0, 0)


def _one_argument(title_bytes: int) -> None:
    """A non-NUL last byte of the argv area: the kernel's setproctitle case,
    the title up to its NUL (no empty arguments after it). Not when the
    title reaches that byte (it is then the title's own, or its NUL)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fd = os.open("/proc/self/stat", os.O_RDONLY)  # a raw read: no file object to build (0.4 -> 0.1 ms)
        try:
            stat = os.read(fd, STAT_MAX)
        finally:
            os.close(fd)
        fields = stat.rsplit(b")", 1)[1].split()  # comm may hold spaces and parentheses
        arg_start, arg_end = (int(fields[n - 3]) for n in ARG_FIELDS)  # fields[0] is the third field
        if title_bytes + 1 < arg_end - arg_start and ctypes.string_at(arg_end - 1, 1) == b"\0":
            ctypes.memmove(arg_end - 1, b" ", 1)
