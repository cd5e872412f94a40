"""The per-user runtime directory's checks and the safe reader of its files."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from fakerun.system.runtime import (
    RuntimeDirError,
    UnsafeFile,
    check,
    ensure,
    exists,
    read_private,
    runtime_dir,
    short_dir,
)
from tests.other_user import OTHER_GID, OTHER_UID, needs_root

ME = os.geteuid()


def refusal(path: Path, uid: int = ME) -> str:
    with pytest.raises(RuntimeDirError) as caught:
        ensure(path, uid)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} ")
    assert message.endswith("set TMPDIR or XDG_RUNTIME_DIR elsewhere")
    return message


# -- where ---------------------------------------------------------------------

def test_xdg_runtime_dir_when_it_exists_else_tmpdir_with_the_uid(tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    assert runtime_dir({"XDG_RUNTIME_DIR": str(xdg), "TMPDIR": str(tmp_path)}, 1234) == xdg / "fakerun"
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "gone"), "TMPDIR": str(tmp_path)}, 1234) == \
        tmp_path / "fakerun-1234"
    assert runtime_dir({"XDG_RUNTIME_DIR": "relative", "TMPDIR": str(tmp_path)}, 7) == tmp_path / "fakerun-7"
    assert runtime_dir({"TMPDIR": str(tmp_path)}, 7) == tmp_path / "fakerun-7"
    assert short_dir(7) == Path("/tmp/fakerun-7")


# -- the directory's checks ----------------------------------------------------

def test_created_0700_and_reused(tmp_path):
    old = os.umask(0)  # mkdir's mode alone must keep others out
    try:
        path = ensure(tmp_path / "fakerun-x")
    finally:
        os.umask(old)
    assert os.lstat(path).st_mode & 0o7777 == 0o700
    assert ensure(path) == path  # there already (ours, or a racing launcher's): checked, used
    assert exists(path) and not exists(tmp_path / "absent")


def test_refuses_a_directory_of_someone_else(tmp_path):
    path = ensure(tmp_path / "d")
    assert refusal(path, uid=ME + 1) == (f"{path} is owned by uid {ME}, not you (uid {ME + 1}): remove it, "
                                         "or set TMPDIR or XDG_RUNTIME_DIR elsewhere")
    with pytest.raises(RuntimeDirError):
        exists(path, ME + 1)


@needs_root
def test_refuses_a_directory_made_by_another_user(tmp_path):
    path = tmp_path / "d"
    path.mkdir(mode=0o700)
    os.chown(path, OTHER_UID, OTHER_GID)
    assert f"is owned by uid {OTHER_UID}, not you (uid 0)" in refusal(path)


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o701, 0o1777])
def test_refuses_group_or_other_permissions(tmp_path, mode):
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(mode)
    assert f"is open to other users (mode {mode:04o}): chmod 700 it" in refusal(path)


def test_refuses_a_symlink_even_to_a_good_directory(tmp_path):
    good = ensure(tmp_path / "good")
    link = tmp_path / "link"
    link.symlink_to(good)
    assert "is a symbolic link: remove it" in refusal(link)


def test_refuses_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("")
    assert "is not a directory: remove it" in refusal(path)


def test_cannot_create_is_one_line(tmp_path):
    message = refusal(tmp_path / "missing" / "fakerun-0")
    assert message.endswith("fakerun-0 cannot be created (No such file or directory): set TMPDIR or "
                            "XDG_RUNTIME_DIR elsewhere")


def test_check_alone_refuses_what_is_not_there(tmp_path):
    with pytest.raises(RuntimeDirError, match="cannot be used"):
        check(tmp_path / "absent")


# -- reading a private file ----------------------------------------------------

def test_reads_a_small_regular_file_of_ours(tmp_path):
    path = tmp_path / "launcher.pid"
    path.write_text("123\n")
    assert read_private(path, 32) == b"123\n"
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "absent", 32)


def test_a_fifo_is_refused_at_once(tmp_path):
    path = tmp_path / "launcher.pid"
    os.mkfifo(path)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_private(path, 32)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(2)
    if reader.is_alive():  # blocked in open(): a writer that closes at once lets it go
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(2)
        pytest.fail("read_private blocked on a FIFO")
    assert isinstance(outcome[0], UnsafeFile) and outcome[0].strerror == "not a regular file (a FIFO)"


@pytest.mark.parametrize("target", ["/dev/zero", "mine"])
def test_a_symlink_is_never_followed(tmp_path, target):
    (tmp_path / "mine").write_text("1\n")
    link = tmp_path / "launcher.pid"
    link.symlink_to(target if target.startswith("/") else tmp_path / target)
    with pytest.raises(OSError) as caught:
        read_private(link, 32)
    assert caught.value.errno == errno.ELOOP


def test_a_device_or_directory_is_refused(tmp_path):
    for path in (Path("/dev/null"), tmp_path):
        with pytest.raises(UnsafeFile, match="not a regular file"):
            read_private(path, 32)


def test_an_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "smi.json"
    path.write_bytes(b"x" * 33)
    with pytest.raises(UnsafeFile) as caught:
        read_private(path, 32)
    assert caught.value.errno == errno.EFBIG and "33 bytes, more than the 32 expected" in str(caught.value)
    assert read_private(path, 33) == b"x" * 33


def test_a_file_of_someone_else_is_refused(tmp_path):
    path = tmp_path / "smi.json"
    path.write_text("{}")
    with pytest.raises(UnsafeFile, match=f"owned by uid {ME}, not you"):
        read_private(path, 32, uid=ME + 1)


@needs_root
def test_a_file_planted_by_another_user_is_refused(tmp_path):
    path = tmp_path / "smi.json"
    path.write_text("{}")
    os.chown(path, OTHER_UID, OTHER_GID)
    with pytest.raises(UnsafeFile, match=f"owned by uid {OTHER_UID}, not you"):
        read_private(path, 32)
