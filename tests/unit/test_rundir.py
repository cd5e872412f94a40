"""The private run directory and its janitor."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from fakerun.rundir import OWNER, RunDir


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_sweep_removes_dirs_of_dead_launchers_only():
    tmp = Path(tempfile.gettempdir())
    orphan = Path(tempfile.mkdtemp(prefix="fakerun-", dir=tmp))
    (orphan / OWNER).write_text(f"{dead_pid()}\n")
    mine = Path(tempfile.mkdtemp(prefix="fakerun-", dir=tmp))
    (mine / OWNER).write_text("1\n")  # alive (init), so never swept
    foreign = Path(tempfile.mkdtemp(prefix="fakerun-", dir=tmp))  # no owner file: not ours to judge
    try:
        RunDir.sweep()
        assert not orphan.exists()
        assert mine.exists() and foreign.exists()
    finally:
        for d in (orphan, mine, foreign):
            subprocess.run(["rm", "-rf", str(d)], check=True, timeout=10)


def test_stable_names_never_reuse_an_existing_directory(tmp_path):
    first = RunDir.create("job", tmp_path, stable="abcdefgh")
    second = RunDir.create("job", tmp_path, stable="abcdefgh")
    try:
        assert first.logs.name == "job_abcdefgh"
        assert second.logs != first.logs and second.logs.name.startswith("job_")
        assert first.private != second.private
    finally:
        first.remove()
        second.remove()
