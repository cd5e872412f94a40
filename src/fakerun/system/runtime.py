"""The per-user runtime directory, and reading what fakerun keeps in it.

Every job's private run dir (ipc socket, owner file, `smi.json`) lives in one
directory per user: `$XDG_RUNTIME_DIR/fakerun` (systemd's per-user tmpfs,
already private) or `<tmp>/fakerun-<uid>`. In a shared /tmp another user may
have created that name first, made it a symlink, or left it open to all, so
it is checked with lstat before every use and refused (one line) unless it
is a real directory of ours that nobody else can enter. Inside it only we can
create files; still, whatever fakerun reads back is opened without following
symlinks or blocking on a FIFO, must be a regular file of ours, and is read
up to a cap: a mistake or a leftover can never stall or exhaust a reader.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fakerun.errors import UsageError
from fakerun.system import files

DIR_MODE = 0o700
SHORT_PARENT = "/tmp"  # short enough for a socket name whatever $TMPDIR is
_FIX = "set TMPDIR or XDG_RUNTIME_DIR elsewhere"


class RuntimeDirError(UsageError):
    """The runtime directory cannot be used safely; the message is one line."""


UnsafeFile = files.UnusableFile  # what read_private refuses (strerror says why, as an OSError's does)


def runtime_dir(environ: Mapping[str, str] = os.environ, uid: int | None = None) -> Path:
    """Where this user's jobs keep their files (not created here: see ensure)."""
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "fakerun"
    return Path(tempdir(environ)) / f"fakerun-{_uid(uid)}"


def short_dir(uid: int | None = None) -> Path:
    """The per-user directory for a socket whose run dir's path is too long."""
    return Path(SHORT_PARENT) / f"fakerun-{_uid(uid)}"


def ensure(path: Path, uid: int | None = None) -> Path:
    """`path`, created 0700 if missing, after check()."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass  # ours from before, or another process's (ours, or not: check says)
    except OSError as exc:
        raise RuntimeDirError(f"{path} cannot be created ({exc.strerror}): {_FIX}") from None
    check(path, uid)
    return path


def exists(path: Path, uid: int | None = None) -> bool:
    """False when `path` is absent; True after check() when it is there."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        pass  # check() says what is wrong
    check(path, uid)
    return True


def check(path: Path, uid: int | None = None) -> None:
    """A real directory (not a symlink) owned by `uid`, closed to group and
    others; otherwise RuntimeDirError."""
    me = _uid(uid)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirError(f"{path} cannot be used ({exc.strerror}): {_FIX}") from None
    if stat.S_ISLNK(st.st_mode):
        problem, fix = "is a symbolic link", "remove it"
    elif not stat.S_ISDIR(st.st_mode):
        problem, fix = "is not a directory", "remove it"
    elif st.st_uid != me:
        problem, fix = f"is owned by uid {st.st_uid}, not you (uid {me})", "remove it"
    elif st.st_mode & 0o077:
        problem, fix = f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o})", "chmod 700 it"
    else:
        return
    raise RuntimeDirError(f"{path} {problem}: {fix}, or {_FIX}")


def read_private(path: Path, cap: int, uid: int | None = None) -> bytes:
    """The bytes of `path`, which must be a regular file owned by `uid` of at
    most `cap` bytes. Never follows a symlink (ELOOP), never blocks (a FIFO
    opens at once with O_NONBLOCK and is then refused), never reads more
    than cap + 1 bytes. FileNotFoundError passes through; anything else
    unusable is an OSError (UnsafeFile for the checks here)."""
    return files.read_regular(path, cap, follow=False, owner=_uid(uid))


def tempdir(environ: Mapping[str, str]) -> str:
    """$TMPDIR from `environ` when it names a directory, as tempfile would."""
    tmp = environ.get("TMPDIR")
    return tmp if tmp and os.path.isdir(tmp) else tempfile.gettempdir()


def _uid(uid: int | None) -> int:
    return os.geteuid() if uid is None else uid
