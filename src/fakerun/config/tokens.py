"""The job token's sources that other users cannot read: a token file, and
under Slurm a token derived from a per-user secret.

The secret lives in the home directory, which a cluster's nodes share, so
every node of a job derives the same token from it and the job id without
anything being passed around, the way same-user cluster tools without munge
authenticate their peers (a shared-home cookie). It sits in the XDG config
directory rather than the runtime directory or /tmp: those are per node and
volatile, and the secret must be the same on every node and outlive a job.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fakerun.errors import UsageError
from fakerun.system import runtime

SECRET_NAME = "secret"
SECRET_BYTES = 32
MIN_SECRET_CHARS = 32  # 128 bits of hex: a hand-made secret must not be weaker
MAX_FILE_BYTES = 4096  # a token or secret is a line; anything larger is not one
TOKEN_CHARS = 32
JOB_LABEL = b"fakerun slurm job token\0"


def secret_path(environ: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME/fakerun/secret, else ~/.config/fakerun/secret. The
    XDG spec says a relative $XDG_CONFIG_HOME is to be ignored."""
    config = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):
        home = environ.get("HOME") or str(Path.home())
        config = os.path.join(home, ".config")
    return Path(config) / "fakerun" / SECRET_NAME


def slurm_token(job_id: str, environ: Mapping[str, str]) -> str:
    """The token of Slurm job `job_id`: the same on every node that shares
    this home directory, unknown to anyone who cannot read the secret."""
    return derive_token(load_secret(secret_path(environ)), job_id)


def derive_token(secret: bytes, job_id: str) -> str:
    mac = hmac.new(secret, JOB_LABEL + job_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:TOKEN_CHARS]


def load_secret(path: Path) -> bytes:
    """The secret at `path`, made on first use."""
    _private_dir(path.parent)
    try:
        return _secret(path)
    except FileNotFoundError:
        _create_secret(path)
        return _secret(path)


def read_token_file(path: Path) -> str:
    """--token-file: the token is the file's first line. The path is the
    user's own choice, so a symlink to it is followed (a mounted secret
    often is one); what it leads to must still be private."""
    try:
        data = read_private(Path(os.path.realpath(path)))
    except FileNotFoundError:
        raise UsageError(f"--token-file {path}: no such file") from None
    except PrivateFileError as exc:
        raise UsageError(f"--token-file {path}: {exc}") from None
    token = data.decode("utf-8", "replace").partition("\n")[0].strip()
    if not token:
        raise UsageError(f"--token-file {path}: the first line is empty")
    return token


class PrivateFileError(UsageError):
    """A file that must be ours alone is not; the message says why."""


def read_private(path: Path) -> bytes:
    """A file as runtime.read_private reads one (regular, ours, no symlink
    followed, no FIFO stall, capped) that no one else can read or change
    either: as ssh refuses such a private key, since others may already
    hold the secret or (writable) have chosen it. FileNotFoundError passes."""
    try:
        data = runtime.read_private(path, MAX_FILE_BYTES)
        bits = stat.S_IMODE(os.stat(path).st_mode)  # only we can chmod our file: no race to fear
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PrivateFileError("a symbolic link" if exc.errno == errno.ELOOP else exc.strerror) from None
    if bits & 0o077:
        raise PrivateFileError(f"open to other users (mode {bits:04o}): run chmod 600 {path}")
    return data


def _secret(path: Path) -> bytes:
    try:
        secret = read_private(path).strip()
    except PrivateFileError as exc:
        raise UsageError(f"the fakerun secret {path}: {exc}") from None
    if len(secret) < MIN_SECRET_CHARS:
        raise UsageError(f"the fakerun secret {path} is shorter than {MIN_SECRET_CHARS} characters; "
                          f"remove it and fakerun makes a new one")
    return secret


def _private_dir(directory: Path) -> None:
    """Made 0700 if missing; if there, ours and not writable by others (who
    could otherwise swap the secret for one they know)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        raise UsageError(f"cannot make {directory} for the fakerun secret: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{directory} (for the fakerun secret) is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UsageError(f"{directory} (for the fakerun secret) must be yours and not writable by "
                          f"others; run: chmod 700 {directory}")


def _create_secret(path: Path) -> None:
    """Write a new secret, never replacing one. Nodes sharing the home start
    at the same moment: each writes a whole temp file, and link() (atomic,
    NFS included) lets exactly one become the secret; the others read it."""
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{SECRET_NAME}.", dir=path.parent)  # 0600, O_EXCL
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another node won: its secret is the one
            os.link(temp, path)
    except OSError as exc:
        raise UsageError(f"cannot create the fakerun secret {path}: {exc.strerror or exc}") from None
    finally:
        if temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
