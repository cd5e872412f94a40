"""Where a job keeps its files: the private run directory (ipc socket,
owner file, smi snapshot) and the log dir, in torchrun's layout
`<log_dir>/<run_id>_<random>/attempt_<n>/<local_rank>/{stdout,stderr}.log`.

Without --log-dir the log dir is torch's default, made as DefaultLogsSpecs
makes it (torch/distributed/elastic/multiprocessing/api.py, checked in the
2.13.0 wheel: `tempfile.mkdtemp(prefix="torchelastic_")` in $TMPDIR or /tmp,
then `mkdtemp(prefix=f"{run_id}_")` in it, both 0700): what a tool reads there
(paths, TORCHELASTIC_ERROR_FILE, error files) is what a real job shows.
Unlike torchrun, which leaves /tmp/torchelastic_* behind on every run, that
default directory is removed when the job ends, with the private one. A
private directory left by a SIGKILLed launcher is swept by the next launcher
(it records its owner's pid), and with it the default log dir it records.
Private directories live in the user's runtime directory (runtime.py); the
sweep looks nowhere else but at the log dir a dead job's record names, and
removes it only if it is still a real directory of ours named torchelastic_*.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fakerun.system import runtime

IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux
OWNER = "launcher.pid"
OWNER_MAX = 32  # bytes: a pid and a newline, with room to spare
SOCKET = "coordinator.sock"
TRASH = ".trash-"  # a dead job's dir, renamed: removed by this sweep or a later one
SWEEP_BUDGET_S = 0.2  # start-up never waits longer for leftovers; a later sweep goes on
DEFAULT_LOGS = "torchelastic_"  # torch's default log dir's prefix (DefaultLogsSpecs)
LOGS_RECORD = "logs.path"  # in the private dir: the default log dir this job made
LOGS_RECORD_MAX = 4096  # bytes: a path
STD_OUT, STD_ERR, STD_ALL = 1, 2, 3  # torch.distributed.elastic.multiprocessing.api.Std


@dataclass
class RunDir:
    private: Path
    logs: Path  # the <run_id>_<random> directory
    socket_dir: Path | None = None  # holds the socket when `private` is too deep for one
    default_logs: Path | None = None  # torch's default log dir, made for this job (no --log-dir)

    @classmethod
    def create(cls, run_id: str, log_dir: Path | None, stable: str | None = None, *,
               ipc: bool = False, environ: Mapping[str, str] = os.environ) -> RunDir:
        """`stable` (under --start-time) replaces mkdtemp's random suffixes so
        paths repeat from run to run; a name already taken falls back to a
        random one, so nothing existing is ever reused. `ipc`: this node's
        coordinator listens on the socket of endpoint(). RuntimeDirError when
        the runtime directory is not safe to use."""
        private = _owned_dir(runtime.ensure(runtime.runtime_dir(environ)), "job-", stable)
        try:
            socket_dir = _socket_dir(private) if ipc else None
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        default = None
        try:
            if log_dir is None:
                default = _make(Path(runtime.tempdir(environ)), DEFAULT_LOGS, stable)
                (private / LOGS_RECORD).write_text(f"{default}\n")  # for the sweep, should we be SIGKILLed
                logs = _make(default, f"{run_id}_", stable)
            else:
                log_dir.mkdir(parents=True, exist_ok=True)
                logs = _make(log_dir, f"{run_id}_", stable)
        except OSError as exc:  # checked before (config), changed since: one line, nothing left
            for made in (private, socket_dir, default):
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
            where = f"--log-dir {log_dir}" if log_dir else f"a log directory in {runtime.tempdir(environ)}"
            raise runtime.RuntimeDirError(f"{where}: {exc.strerror or exc}") from None
        return cls(private, logs, socket_dir, default)

    def endpoint(self) -> str:
        """The coordinator's ipc:// endpoint (create() made sure it fits)."""
        return f"ipc://{(self.socket_dir or self.private) / SOCKET}"

    def rank_logs(self, attempt: int, local_rank: int, kept: int = STD_ALL) -> tuple[Path, Path]:
        """A rank's (stdout, stderr) files. `kept`: torchrun's Std bits (1
        stdout, 2 stderr) of the streams it redirects or tees, whose files
        are in the log dir (DefaultLogsSpecs.reify makes `<local rank>/` for
        every rank, a stream's file only when redirected or teed); the
        others, which a real rank writes to the console, go to the private
        dir, where no tool looks, in the same layout (`<run id>_<random>/…`:
        the tests find a rank by its run id there)."""
        folder = self.logs / f"attempt_{attempt}" / str(local_rank)
        folder.mkdir(parents=True, exist_ok=True)
        private = self.private / self.logs.name / f"attempt_{attempt}" / str(local_rank)
        if kept != STD_ALL:
            private.mkdir(parents=True, exist_ok=True)
        return tuple((folder if kept & bit else private) / name  # type: ignore[return-value]
                     for bit, name in ((STD_OUT, "stdout.log"), (STD_ERR, "stderr.log")))

    def error_file(self, attempt: int, local_rank: int) -> Path:
        return self.logs / f"attempt_{attempt}" / str(local_rank) / "error.json"

    def remove(self) -> None:
        for made in (self.private, self.socket_dir, self.default_logs):
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)

    @staticmethod
    def running(root: Path) -> list[tuple[Path, int]]:
        """(private dir, launcher pid) of every job in the runtime directory
        `root` (already checked) whose launcher is alive."""
        found = []
        with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
            for entry in entries:
                owner = _owner(entry)
                if owner is not None and alive(owner):
                    found.append((Path(entry.path), owner))
        return found

    @staticmethod
    def sweep(environ: Mapping[str, str] = os.environ, budget: float = SWEEP_BUDGET_S,
              clock: Callable[[], float] = time.monotonic) -> None:
        """Remove private dirs whose launcher no longer exists, for `budget`
        seconds at most. RuntimeDirError when the runtime directory is not
        safe to use."""
        deadline = clock() + budget
        for root in _roots(environ):
            if not _sweep(root, deadline, clock):
                return


def _roots(environ: Mapping[str, str]) -> list[Path]:
    """The runtime directory, and the short socket directory if it is a
    usable one of ours (it only ever holds sockets: refusing it is create's
    business, when a socket needs it)."""
    root = runtime.ensure(runtime.runtime_dir(environ))
    short = runtime.short_dir()
    if short == root:
        return [root]
    try:
        return [root, short] if runtime.exists(short) else [root]
    except runtime.RuntimeDirError:
        return [root]


def _sweep(root: Path, deadline: float, clock: Callable[[], float]) -> bool:
    """One pass over `root`; False when the budget ran out."""
    with os.scandir(root) as entries:
        for entry in entries:
            if clock() >= deadline:
                return False
            if entry.name.startswith(TRASH):  # an earlier sweep ran out of time in it
                if not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
                trash = entry.path
            else:
                owner = _owner(entry)
                if owner is None or owner == os.getpid() or alive(owner):
                    continue
                # Renamed first: the owner file goes early in the removal, and a
                # later sweep must still know the rest is garbage.
                trash = os.path.join(root, TRASH + entry.name)
                try:
                    os.rename(entry.path, trash)
                except OSError:
                    continue  # another launcher's sweep took it
            if not _remove_job(trash, deadline, clock):
                return False
    return True


def _remove_job(trash: str, deadline: float, clock: Callable[[], float]) -> bool:
    """A dead job's private dir, and first the default log dir it recorded
    (so that the record outlives it, should the budget run out between)."""
    default = _recorded_logs(Path(trash))
    if default is not None and not _remove_tree(str(default), deadline, clock):
        return False
    return _remove_tree(trash, deadline, clock)


def _recorded_logs(private: Path) -> Path | None:
    """The default log dir a dead job recorded, if it is still one it could
    have made: a real directory (not a symlink) of ours named torchelastic_*,
    beside nothing but a path. Anything else is left alone."""
    try:
        path = Path(runtime.read_private(private / LOGS_RECORD, LOGS_RECORD_MAX).decode().strip())
        st = os.lstat(path)
    except (OSError, ValueError):  # no record (a --log-dir job), or gone already
        return None
    ours = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    return path if ours and path.is_absolute() and path.name.startswith(DEFAULT_LOGS) else None


def _remove_tree(top: str, deadline: float, clock: Callable[[], float]) -> bool:
    """rm -rf `top` until `deadline`; False when time ran out first. Entries
    go as they are met (an empty directory by one rmdir) and the clock only
    stops a call that removed something, so sweeps make progress however
    large or deep the tree. Symlinks are removed, never followed; depth
    costs a list, not Python's recursion limit."""
    stack, removed = [top], False
    while stack:
        if removed and clock() >= deadline:
            return False
        current = stack[-1]
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if removed and clock() >= deadline:
                        return False
                    if not entry.is_dir(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed = True
                        continue
                    try:
                        os.rmdir(entry.path)
                        removed = True
                    except OSError:  # not empty: go in; this directory is scanned again after
                        stack.append(entry.path)
                        break
                else:
                    os.rmdir(current)
                    removed = True
                    stack.pop()
        except FileNotFoundError:
            stack.pop()
        except OSError:
            break  # e.g. a directory we cannot read: left for a later sweep, the others go on
    return True


def _owner(entry: os.DirEntry[str]) -> int | None:
    """The pid in a private dir's owner file; None for anything else."""
    if not entry.is_dir(follow_symlinks=False):
        return None
    try:
        pid = int(runtime.read_private(Path(entry.path) / OWNER, OWNER_MAX))
    except (OSError, ValueError):
        return None  # not a job's dir, or still being created
    return pid if pid > 0 else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: leave their dir alone
        return True
    return True


def _socket_dir(private: Path) -> Path | None:
    """None when the socket fits in `private`; else a fresh directory in the
    short per-user one (RuntimeDirError if even that does not fit or is not
    safe: never a silent fallback to TCP)."""
    if _fits(private / SOCKET):
        return None
    short = _owned_dir(runtime.ensure(runtime.short_dir()), "sock-", None)
    if not _fits(short / SOCKET):
        shutil.rmtree(short, ignore_errors=True)
        raise runtime.RuntimeDirError(
            f"the ipc socket path {short / SOCKET} is longer than the {IPC_PATH_MAX} bytes a socket "
            "name can hold: set TMPDIR or XDG_RUNTIME_DIR to a shorter directory")
    return short


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= IPC_PATH_MAX


def _owned_dir(root: Path, prefix: str, stable: str | None) -> Path:
    """A new directory in `root` with our pid in its owner file, for the sweep."""
    path = _make(root, prefix, stable)
    (path / OWNER).write_text(f"{os.getpid()}\n")
    return path


def _make(parent: Path, prefix: str, stable: str | None) -> Path:
    if stable is not None:
        path = parent / f"{prefix}{stable}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            pass
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
