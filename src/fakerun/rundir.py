"""Where a job keeps its files: the private run directory (ipc socket, and
rank logs when no --log-dir is given) and torchrun's log-dir layout
`<log_dir>/<run_id>_<random>/attempt_<n>/<local_rank>/{stdout,stderr}.log`.

Unlike torchrun, which leaves /tmp/torchelastic_* behind on every run, the
private directory is removed when the job ends; one left by a launcher that
was SIGKILLed is swept by the next launcher (it records its owner's pid).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux
OWNER = "launcher.pid"


@dataclass
class RunDir:
    private: Path
    logs: Path  # the <run_id>_<random> directory (or one inside `private`)

    @classmethod
    def create(cls, run_id: str, log_dir: Path | None, stable: str | None = None) -> RunDir:
        """`stable` (under --start-time) replaces mkdtemp's random suffixes so
        paths repeat from run to run; a name already taken falls back to a
        random one, so nothing existing is ever reused."""
        private = _make(Path(tempfile.gettempdir()), "fakerun-", stable)
        (private / OWNER).write_text(f"{os.getpid()}\n")
        if log_dir is None:
            logs = private / "logs"
            logs.mkdir()
        else:
            log_dir.mkdir(parents=True, exist_ok=True)
            logs = _make(log_dir, f"{run_id}_", stable)
        return cls(private, logs)

    def endpoint(self) -> str | None:
        """An ipc:// endpoint, or None when the path would be too long."""
        path = self.private / "coordinator.sock"
        return f"ipc://{path}" if len(str(path)) <= IPC_PATH_MAX else None

    def rank_logs(self, attempt: int, local_rank: int) -> tuple[Path, Path]:
        folder = self.logs / f"attempt_{attempt}" / str(local_rank)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "stdout.log", folder / "stderr.log"

    def error_file(self, attempt: int, local_rank: int) -> Path:
        return self.logs / f"attempt_{attempt}" / str(local_rank) / "error.json"

    def remove(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)

    @staticmethod
    def running(parent: Path) -> list[tuple[Path, int]]:
        """(private dir, launcher pid) of every job under `parent` whose
        launcher is alive."""
        return [(folder, owner) for folder, owner in _owned(parent) if alive(owner)]

    @staticmethod
    def sweep() -> None:
        """Remove private dirs whose launcher no longer exists."""
        for folder, owner in _owned(Path(tempfile.gettempdir())):
            if owner != os.getpid() and not alive(owner):
                shutil.rmtree(folder, ignore_errors=True)


def _owned(parent: Path) -> list[tuple[Path, int]]:
    """Private dirs under `parent` with the pid of the launcher that made them."""
    found = []
    for folder in parent.glob("fakerun-*"):
        try:
            found.append((folder, int((folder / OWNER).read_text())))
        except (OSError, ValueError):
            continue  # not ours, or still being created
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: leave their dir alone
        return True
    return True


def _make(parent: Path, prefix: str, stable: str | None) -> Path:
    if stable is not None:
        path = parent / f"{prefix}{stable}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            pass
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
