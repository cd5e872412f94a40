"""The paths a run writes to, checked before anything starts: a name in
UTF-8, a directory that exists and takes a file, a file that will not hang
the open (a FIFO) and leaves room for what fakerun makes under it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from fakerun.errors import UsageError
from fakerun.system.files import check_regular


def check_name(flag: str, path: Path | str) -> None:
    """A path's name must be text: fakerun writes it into UTF-8 logs, JSON
    and its messages between processes (a name in other bytes was a
    UnicodeEncodeError there, after the ranks had started)."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(f"{flag} {shown}: the name is not valid UTF-8") from None


def short(path: Path | str) -> str:
    """A path as messages show it: a name of thousands of bytes, abridged."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:80]}...{text[-30:]}"


def check_file_target(path: Path, flag: str) -> None:
    """A file we will (re)write: a regular file or none yet (a FIFO would
    hang the open), in an existing writable directory."""
    check_name(flag, path)
    try:
        if path.is_dir():  # raises what lexists would swallow: a name too long
            raise UsageError(f"{flag} {short(path)}: is a directory")
        check_regular(path)
    except OSError as exc:  # NotRegularFile; or stat's own error (a symlink loop, a name too long)
        raise UsageError(f"{flag} {short(path)}: {exc.strerror}") from None
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {short(path)}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {short(path)}: not writable")


# What fakerun makes under a --log-dir or --output-dir: torchrun's layout
# (`<run id>_<8>/attempt_<n>/<local rank>/stderr.log`, the run id at most
# MAX_RUN_ID bytes) or a checkpoint (`checkpoint-<step>.tmp-<pid>-<hex>/
# model-00001-of-00002.safetensors`); the directory must leave room for it.
DEPTH_RESERVE = 512


def check_writable_dir(path: Path, flag: str = "--log-dir") -> None:
    """The directory must exist or be creatable, and be writable by us."""
    check_name(flag, path)
    probe = path
    try:
        while not _lexists(probe) and probe.parent != probe:  # a symlink counts as there
            probe = probe.parent
        os.stat(probe)  # through symlinks: a dangling one is ENOENT, a loop ELOOP (mkdir: EEXIST)
    except OSError as exc:
        if exc.errno == errno.ENOENT and probe.is_symlink():
            raise UsageError(f"{flag} {short(path)}: {probe} is a symbolic link to {os.readlink(probe)}, "
                              "which does not exist") from None
        raise UsageError(f"{flag} {short(path)}: {short(probe)}: {exc.strerror}") from None
    if not probe.is_dir():
        raise UsageError(f"{flag} {short(path)}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {short(path)}: {probe} is not writable")
    _check_length(path, probe, flag)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {short(path)}: cannot write there ({exc.strerror})") from None


def _lexists(path: Path) -> bool:
    """os.path.lexists, except that a name too long is an error, not absent
    (it was taken for a directory still to make, and mkdir failed after the
    checks, a traceback)."""
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise
        return False
    return True


def _check_length(path: Path, probe: Path, flag: str) -> None:
    """Each name still to make fits the file system, and the whole path
    leaves room for what fakerun makes under it."""
    name_max, path_max = os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    too_long = f"{flag} {short(path)}: {os.strerror(errno.ENAMETOOLONG)}"
    if any(len(os.fsencode(part)) > name_max for part in path.parts):
        raise UsageError(f"{too_long} (at most {name_max} bytes a name)")
    if len(os.fsencode(os.path.abspath(path))) > path_max - DEPTH_RESERVE:
        raise UsageError(f"{too_long} (at most {path_max - DEPTH_RESERVE} bytes, to leave room for the "
                          f"{DEPTH_RESERVE} fakerun makes under it)")
