"""Opening the user's paths (--metrics-file, --resume's trainer_state.json,
a --scenario file) so that no open or read can block: a FIFO, a terminal
or a device where a regular file belongs would otherwise hang open(2) for
ever (a FIFO without a reader), while a stop signal is only recorded and
the call retried (PEP 475).

O_NONBLOCK makes the open return at once (a FIFO opened for writing with
no reader is ENXIO), and fstat then refuses anything but a regular file.
On regular files O_NONBLOCK changes nothing, so it stays set."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnusableFile(OSError):
    """A file fakerun will not read or write; strerror says why."""

    def __init__(self, why: str, code: int = errno.EPERM, path: Path | None = None) -> None:
        super().__init__(code, why, *([str(path)] if path is not None else []))


class NotRegularFile(UnusableFile):
    """A path that must be a regular file is something else; strerror says what."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})", errno.EINVAL)


def kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in KINDS if test(mode)), "a special file")


def check_regular(path: Path) -> None:
    """NotRegularFile when `path` exists (symlinks followed) and is not a
    regular file; a missing path passes (it will be created)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    what = kind(mode)
    if what is not None:
        raise NotRegularFile(what)


def open_regular(path: Path, flags: int, mode: int = 0o666, follow: bool = True) -> int:
    """os.open that never blocks and yields only a regular file's descriptor
    (NotRegularFile, or the open's own OSError, otherwise). `follow=False`:
    a symlink is refused too (ELOOP), for files in our private directories."""
    if follow:
        check_regular(path)  # the common case, named before any open: "a FIFO", not ENXIO
    else:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    try:
        what = kind(os.fstat(fd).st_mode)  # swapped for something else since the check
        if what is not None:
            raise NotRegularFile(what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, cap: int, follow: bool = True, owner: int | None = None) -> bytes:
    """The bytes of regular file `path`, at most `cap` (EFBIG beyond); with
    `owner`, only a file of that uid. Reads no more than cap + 1 bytes."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    try:
        st = os.fstat(fd)
        if owner is not None and st.st_uid != owner:
            raise UnusableFile(f"owned by uid {st.st_uid}, not you", path=path)
        if st.st_size > cap:
            raise UnusableFile(f"{st.st_size} bytes, more than the {cap} expected", errno.EFBIG, path)
        data = read_upto(fd, cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:  # grew since the fstat
        raise UnusableFile(f"more than the {cap} bytes expected", errno.EFBIG, path)
    return data


def read_upto(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
