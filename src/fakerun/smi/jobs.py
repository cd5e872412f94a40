"""The running jobs' GPU snapshots: where `fakerun smi` and the nvidia-smi
shim find them (each job's private run dir in the user's runtime
directory, or a --file) and how they read them, trusting nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun.smi.snapshot import SNAPSHOT_MAX, SNAPSHOT_NAME, Snapshot, SnapshotError
from fakerun.system.rundir import RunDir, alive
from fakerun.system.runtime import exists, read_private, runtime_dir


@dataclass(frozen=True)
class Source:
    path: Path
    owner: int | None = None  # the launcher's pid, when found through its run dir

    @property
    def private(self) -> bool:
        """Found in the user's runtime dir (not --file): read only if it is safe."""
        return self.owner is not None


def find(environ: Any, file: Path | None = None, job: str | None = None) -> list[tuple[float, str, Source]]:
    """(time, run id, source) of every running job with a snapshot (of run
    id `job`, if given), oldest first; or just `file`."""
    if file is not None:
        return [(0.0, "", Source(file))] if file.is_file() else []
    root = runtime_dir(environ)
    if not exists(root):  # no job has run: nothing to find, and nothing to create
        return []
    found = []
    for folder, owner in RunDir.running(root):
        source = Source(folder / SNAPSHOT_NAME, owner)
        try:
            snap = read(source)
        except SnapshotError:
            continue  # not a snapshot this fakerun can read
        if snap is not None and job in (None, snap.run_id):
            found.append((snap.time, snap.run_id, source))
    return sorted(found, key=lambda f: f[0])


def read(source: Source) -> Snapshot | None:
    """The snapshot, or None once the job is gone (file removed, launcher dead)."""
    if source.owner is not None and not alive(source.owner):
        return None
    try:
        data = read_private(source.path, SNAPSHOT_MAX) if source.private else source.path.read_bytes()
        return Snapshot.from_json(data)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"{source.path}: {exc.strerror}") from None
    except SnapshotError as exc:
        raise SnapshotError(f"{source.path}: {exc}") from None


def newest(environ: Any) -> Snapshot | None:
    """The newest running job's snapshot, if any."""
    found = find(environ)
    return read(found[-1][2]) if found else None


class Reader:
    """Parses the file again only when it changed: every write is an
    os.replace, which gives it a new inode and mtime."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.stamp: tuple[int, int, int] | None = None
        self.snap: Snapshot | None = None

    def read(self) -> Snapshot | None:
        try:
            st = self.source.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp != self.stamp:
            self.snap, self.stamp = read(self.source), stamp
        elif self.source.owner is not None and not alive(self.source.owner):
            return None  # SIGKILLed: its file stays behind, unchanged
        return self.snap
