"""Writing a checkpoint so that a kill at any moment leaves either no
`checkpoint-<step>` (`iter_0000004`, `global_step4`, `epoch=0-step=4.ckpt`:
any framework's name) or a complete one: a temporary directory (or file),
fsynced, renamed into place, modes from the umask; and sweeping the
temporaries a killed save left."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fakerun.checkpoint.reader import STATE
from fakerun.system.rundir import alive


@dataclass(frozen=True)
class Sparse:
    """A file whose data lies between its headers (a torch.save zip's
    storages): only `pieces` (offset, bytes) are written, the rest of its
    `size` bytes a hole; where the file system keeps no holes, `compact`
    (the file less that data) is written instead."""

    pieces: tuple[tuple[int, bytes], ...]
    size: int
    compact: bytes


def write(target: Path, files: dict[str, bytes | Sparse], sizes: dict[str, int] | None = None,
          mtime: float | None = None, last: str = STATE) -> None:
    """Write `files` (names relative to `target`, `a/b.pt` in a subdirectory)
    into `target` atomically (temp dir + rename), with the modes the process
    umask gives (0755 and 0644 under the usual 022), as the real frameworks
    do: a sidecar uploader of another user reads them.
    `sizes`: files to extend to that size with a hole, where the file system
    keeps holes (elsewhere they keep their bytes: a hole of 16 GB written out
    as zeros would fill the disk). `mtime`: the files' modification time (the
    run's clock at the save, which --resume reads back). `last`: the file
    written last, whose presence marks a complete checkpoint. Temporaries a
    killed save left in the same directory go first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp = _temp_dir(target, "tmp")
    try:
        keeps = keeps_holes(tmp) if sizes or any(isinstance(d, Sparse) for d in files.values()) else False
        holes = sizes if sizes and keeps else {}
        for name in sorted(files, key=lambda n: n == last):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            _write_file(tmp / name, files[name], holes.get(name, 0), keeps)
            if mtime is not None:
                os.utime(tmp / name, (mtime, mtime))
        _fsync_dir(tmp)
        _replace(tmp, target)
        if mtime is not None:
            os.utime(target, (mtime, mtime))
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_file(target: Path, data: bytes | Sparse, mtime: float | None = None, size: int = 0) -> None:
    """One file written atomically (a temp file in its directory, fsynced,
    renamed over it): a reader sees the old bytes or the new, never half
    (Megatron's latest_checkpointed_iteration.txt, DeepSpeed's `latest`, a
    Lightning .ckpt). `size`: as write's `sizes`, one file's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}@{socket.gethostname()}-{_suffix()}"
    try:
        holes = keeps_holes(target.parent) if size or isinstance(data, Sparse) else False
        _write_file(tmp, data, size if holes else 0, holes)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(target: Path) -> None:
    """Delete a checkpoint directory so that no reader sees half of it:
    renamed aside first (into a temporary that a killed delete leaves for
    sweep_stale), then removed."""
    old = _temp_dir(target, "old")
    os.rename(target, old / target.name)
    shutil.rmtree(old, ignore_errors=True)


def _replace(tmp: Path, target: Path) -> None:
    """A newer run saving the same step replaces the old one, never half-replaces it."""
    if target.exists():
        old = _temp_dir(target, "old")
        os.rename(target, old / target.name)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


# A save's temporaries: `.<name>.tmp-<pid>@<host>-<random>` (and `.old-`, for
# the checkpoint it replaces), `<name>` the checkpoint's (`checkpoint-4`,
# `iter_0000004`, `latest`...). The writer's pid and host tell a dead save's
# (SIGKILLed mid-write) from a live one's; names from before they carried
# them (`.checkpoint-<step>.tmp-<random>`) go by age.
_TEMP = re.compile(r"\.[^/]+?\.(?:tmp|old)-(?:(\d+)@(.+)-)?[a-z0-9_]{8}")
STALE_S = 3600.0  # a temp dir untouched this long is no live save's (a save takes well under a second)


def _suffix() -> str:
    """8 random characters, as mkdtemp ends a name."""
    return secrets.token_hex(4)


def _temp_dir(target: Path, kind: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}@{socket.gethostname()}-",
                                dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would stay on the renamed checkpoint
    return tmp


def sweep_stale(root: Path, now: float | None = None) -> list[str]:
    """Remove the temporaries of saves that died in `root`: only ours (our
    uid, our name pattern, a real directory, or a file of a writer named
    in it) and only stale (the writer on
    this host is gone, or untouched for STALE_S). Returns what went."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            match = _TEMP.fullmatch(entry.name)
            if match is None:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if not (is_dir or stat.S_ISREG(st.st_mode)) or st.st_uid != os.geteuid():
                    continue
                pid, host = match.groups()
                dead = pid is not None and host == socket.gethostname() and not alive(int(pid))
                # A file only where its writer is named and gone (write_file's):
                # one without a writer may be anyone's.
                if dead or (is_dir and now - st.st_mtime > STALE_S):
                    shutil.rmtree(entry.path) if is_dir else os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def _umask() -> int:
    """The process umask (reading it means setting it: put it straight back;
    the launcher is one thread)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


PROBE_BYTES = 1 << 20


def keeps_holes(folder: Path) -> bool:
    """Whether a file extended past its end in `folder` stays unallocated
    (ext4, xfs, btrfs, tmpfs do; FAT, some network file systems do not): a
    probe file of 1 MiB, all hole, must take fewer blocks than that."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    try:
        os.ftruncate(fd, PROBE_BYTES)
        return os.fstat(fd).st_blocks * 512 < PROBE_BYTES
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(probe)


def _write_file(path: Path, data: bytes | Sparse, size: int = 0, holes: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # less the umask
    try:
        if isinstance(data, Sparse):
            pieces, size = (data.pieces, data.size) if holes else (((0, data.compact),), 0)
        else:
            pieces = ((0, data),)
        for offset, piece in pieces:
            _write_at(fd, piece, offset)
        if size > os.lseek(fd, 0, os.SEEK_END):
            os.ftruncate(fd, size)  # the rest a hole: reads as zeros, takes no blocks
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Past the end, the bytes skipped become a hole."""
    view = memoryview(data)
    while view:
        view = view[os.pwrite(fd, view, offset + len(data) - len(view)):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
