"""files.py: the user's paths open at once, and only as regular files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fakerun.system import files


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_APPEND])
def test_a_fifo_is_refused_without_blocking(fifo: Path, flags: int):
    with pytest.raises(files.NotRegularFile, match=r"not a regular file \(a FIFO\)"):
        files.open_regular(fifo, flags)


def test_a_device_is_refused():
    with pytest.raises(files.NotRegularFile, match="a character device"):
        files.read_regular(Path(os.devnull), 10)


def test_a_fifo_swapped_in_after_the_check_still_cannot_block(fifo: Path, monkeypatch):
    """The check passed on a regular file; by the open it is a FIFO: the
    open does not wait for a reader (ENXIO), and a read-open is refused by
    fstat."""
    monkeypatch.setattr(files, "check_regular", lambda path: None)
    with pytest.raises(OSError) as caught:
        files.open_regular(fifo, os.O_WRONLY)
    assert caught.value.errno == errno.ENXIO
    with pytest.raises(files.NotRegularFile):
        files.open_regular(fifo, os.O_RDONLY)


def test_reads_are_capped(tmp_path: Path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 11)
    assert files.read_regular(path, 11) == b"x" * 11
    with pytest.raises(OSError) as caught:
        files.read_regular(path, 10)
    assert caught.value.errno == errno.EFBIG


def test_a_missing_path_passes_the_check(tmp_path: Path):
    files.check_regular(tmp_path / "not yet")
