"""The private run directory and its janitor."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from fakerun.system import runtime
from fakerun.system.rundir import IPC_PATH_MAX, LOGS_RECORD, OWNER, TRASH, RunDir
from fakerun.system.runtime import RuntimeDirError, ensure, runtime_dir
from tests.other_user import OTHER_GID, OTHER_UID, needs_root


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """An environ whose runtime dir is in tmp_path, and a short socket dir
    there too: these tests never sweep the user's real ones."""
    monkeypatch.setattr(runtime, "SHORT_PARENT", str(tmp_path / "short"))
    (tmp_path / "short").mkdir()
    return {"TMPDIR": str(tmp_path)}


@pytest.fixture
def short_tmp() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def job(root: Path, name: str, owner: int | None) -> Path:
    folder = root / name
    folder.mkdir(mode=0o700)
    if owner is not None:
        (folder / OWNER).write_text(f"{owner}\n")
    return folder


class Ticks:
    """A clock that moves one second a call: the sweep's budget counts entries."""

    def __init__(self) -> None:
        self.now = itertools.count()

    def __call__(self) -> float:
        return float(next(self.now))


def test_sweep_removes_dirs_of_dead_launchers_only(env):
    root = ensure(runtime_dir(env))
    orphan = job(root, "job-orphan", dead_pid())
    (orphan / "logs" / "attempt_0" / "0").mkdir(parents=True)
    (orphan / "logs" / "attempt_0" / "0" / "stdout.log").write_text("x")
    mine = job(root, "job-mine", 1)  # alive (init), so never swept
    foreign = job(root, "job-foreign", None)  # no owner file (yet): not ours to judge
    short = ensure(runtime.short_dir())
    socket = job(short, "sock-orphan", dead_pid())  # a SIGKILLed launcher's socket dir
    RunDir.sweep(env)
    assert not orphan.exists() and not socket.exists()
    assert mine.exists() and foreign.exists()
    assert sorted(p.name for p in root.iterdir()) == ["job-foreign", "job-mine"]


def test_sweep_removes_the_default_log_dir_a_dead_job_recorded_and_nothing_else(env, tmp_path):
    """A SIGKILLed launcher leaves torch's default log dir in $TMPDIR; its
    record in the private dir names it. Only a real directory of ours
    named torchelastic_* goes: not a symlink, not another name."""
    root = ensure(runtime_dir(env))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    logs = tmp / "torchelastic_abcd1234"
    (logs / "job_x" / "attempt_0" / "0").mkdir(parents=True)
    elsewhere = tmp / "precious"
    elsewhere.mkdir()
    (tmp / "torchelastic_link").symlink_to(elsewhere)
    for name, target in (("job-a", logs), ("job-b", elsewhere), ("job-c", tmp / "torchelastic_link"),
                         ("job-d", tmp / "torchelastic_gone")):
        (job(root, name, dead_pid()) / LOGS_RECORD).write_text(f"{target}\n")
    RunDir.sweep(env)
    assert not logs.exists() and list(root.iterdir()) == []
    assert elsewhere.is_dir() and (tmp / "torchelastic_link").is_symlink()


def test_sweep_never_blocks_on_or_reads_hostile_owner_files(env):
    root = ensure(runtime_dir(env))
    fifo, zero, big = (job(root, name, None) for name in ("job-fifo", "job-zero", "job-big"))
    os.mkfifo(fifo / OWNER)
    (zero / OWNER).symlink_to("/dev/zero")
    (big / OWNER).write_text(" " * 10_000 + str(dead_pid()))
    done = threading.Event()
    sweeper = threading.Thread(target=lambda: (RunDir.sweep(env), done.set()), daemon=True)
    sweeper.start()
    sweeper.join(5)
    if not done.is_set():
        os.close(os.open(fifo / OWNER, os.O_WRONLY | os.O_NONBLOCK))  # let a blocked open go
        pytest.fail("the sweep blocked")
    assert fifo.exists() and zero.exists() and big.exists()  # unknown owners: left alone


def test_sweep_is_bounded_and_later_sweeps_finish_the_job(env):
    root = ensure(runtime_dir(env))
    orphan = job(root, "job-orphan", dead_pid())
    for i in range(50):
        (orphan / f"d{i}" / "sub").mkdir(parents=True)
    (orphan / "deep").mkdir()
    deep = orphan / "deep"
    for _ in range(100):  # deeper than any recursion a remover could afford per entry
        deep = deep / "d"
        deep.mkdir()
    left, sweeps = len(list(root.rglob("*"))), 0
    while left:
        RunDir.sweep(env, budget=20, clock=Ticks())  # a few entries a sweep
        sweeps += 1
        if sweeps == 1:  # out of time: what is left is marked as garbage, not forgotten
            assert [p.name for p in root.iterdir()] == [TRASH + "job-orphan"]
        before, left = left, len(list(root.rglob("*")))
        assert left < before, f"sweep {sweeps} made no progress"
    assert sweeps > 5


def test_sweep_removes_links_not_what_they_point_to(env, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("x")
    orphan = job(ensure(runtime_dir(env)), "job-orphan", dead_pid())
    (orphan / "link").symlink_to(precious)
    (orphan / "file-link").symlink_to(precious / "keep")
    RunDir.sweep(env)
    assert not orphan.exists() and (precious / "keep").read_text() == "x"


def test_sweep_refuses_a_runtime_dir_it_cannot_trust(env, tmp_path):
    (tmp_path / f"fakerun-{os.geteuid()}").mkdir(mode=0o755)
    os.chmod(tmp_path / f"fakerun-{os.geteuid()}", 0o755)
    with pytest.raises(RuntimeDirError, match="open to other users"):
        RunDir.sweep(env)
    with pytest.raises(RuntimeDirError, match="open to other users"):
        RunDir.create("job", None, environ=env)


def test_create_makes_a_private_dir_in_the_runtime_dir(env, short_tmp):
    env = {"TMPDIR": str(short_tmp)}  # short enough for the socket
    rundir = RunDir.create("job", None, ipc=True, environ=env)
    try:
        assert rundir.private.parent == runtime_dir(env)
        assert os.stat(rundir.private).st_mode & 0o777 == 0o700
        assert (rundir.private / OWNER).read_text() == f"{os.getpid()}\n"
        assert rundir.endpoint() == f"ipc://{rundir.private}/coordinator.sock"
        assert rundir.socket_dir is None
    finally:
        rundir.remove()
    assert not rundir.private.exists()


def test_without_a_log_dir_the_logs_are_in_torchs_default_layout(short_tmp):
    """torch's DefaultLogsSpecs (elastic/multiprocessing/api.py, 2.13.0 wheel):
    $TMPDIR/torchelastic_<8>/<run_id>_<8>, each made by mkdtemp (0700); the
    private dir holds no logs. fakerun removes the default dir at the end."""
    env = {"TMPDIR": str(short_tmp)}
    rundir = RunDir.create("job42", None, environ=env)
    try:
        default = rundir.logs.parent
        assert default.parent == short_tmp and default.name.startswith("torchelastic_")
        assert len(default.name) == len("torchelastic_") + 8 and rundir.default_logs == default
        assert rundir.logs.name.startswith("job42_") and len(rundir.logs.name) == len("job42_") + 8
        assert {os.stat(p).st_mode & 0o777 for p in (default, rundir.logs)} == {0o700}
        out, err = rundir.rank_logs(0, 1)
        assert out == rundir.logs / "attempt_0" / "1" / "stdout.log"
        assert rundir.error_file(0, 1) == rundir.logs / "attempt_0" / "1" / "error.json"
        assert sorted(p.name for p in rundir.private.iterdir()) == sorted([LOGS_RECORD, OWNER])  # no logs
        assert (rundir.private / LOGS_RECORD).read_text() == f"{default}\n"
        out, err = rundir.rank_logs(1, 0, kept=1)  # only stdout redirected or teed: stderr out of sight
        assert (out.parent, err.parent) == (rundir.logs / "attempt_1" / "0",
                                            rundir.private / rundir.logs.name / "attempt_1" / "0")
    finally:
        rundir.remove()
    assert not default.exists() and not rundir.private.exists()
    stable = RunDir.create("job42", None, "abcd1234", environ=env)  # under --start-time: names repeat
    stable.remove()
    assert (stable.default_logs.name, stable.logs.name) == ("torchelastic_abcd1234", "job42_abcd1234")


def test_a_socket_path_too_long_moves_to_the_short_dir(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * (IPC_PATH_MAX - len(str(tmp_path))))
    deep.mkdir()
    rundir = RunDir.create("job", None, ipc=True, environ={"TMPDIR": str(deep)})
    try:
        path = rundir.endpoint().removeprefix("ipc://")
        assert len(path) <= IPC_PATH_MAX and path.startswith(f"{runtime.short_dir()}/sock-")
        assert (Path(path).parent / OWNER).read_text() == f"{os.getpid()}\n"  # the sweep can judge it
    finally:
        rundir.remove()
    assert not Path(path).parent.exists() and not rundir.private.exists()
    # Without ipc (node > 0) no socket dir is needed.
    other = RunDir.create("job", None, environ={"TMPDIR": str(deep)})
    other.remove()
    assert other.socket_dir is None


def test_a_socket_path_that_fits_nowhere_is_one_error(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * (IPC_PATH_MAX - len(str(tmp_path))))
    deep.mkdir()
    monkeypatch.setattr(runtime, "SHORT_PARENT", str(deep))
    with pytest.raises(RuntimeDirError, match=r"ipc socket path .* is longer than the 100 bytes") as caught:
        RunDir.create("job", None, ipc=True, environ={"TMPDIR": str(deep)})
    assert "\n" not in str(caught.value)
    assert [p.name for p in (deep / f"fakerun-{os.geteuid()}").iterdir()] == []  # nothing half made


@needs_root
def test_a_short_dir_taken_by_another_user_is_refused_not_worked_around(tmp_path, monkeypatch):
    short = tmp_path / "short"
    short.mkdir()
    short.chmod(0o1777)
    monkeypatch.setattr(runtime, "SHORT_PARENT", str(short))
    (short / f"fakerun-{os.geteuid()}").mkdir(mode=0o700)
    os.chown(short / f"fakerun-{os.geteuid()}", OTHER_UID, OTHER_GID)
    deep = tmp_path / ("d" * (IPC_PATH_MAX - len(str(tmp_path))))
    deep.mkdir()
    with pytest.raises(RuntimeDirError, match=f"is owned by uid {OTHER_UID}, not you"):
        RunDir.create("job", None, ipc=True, environ={"TMPDIR": str(deep)})
    assert [p.name for p in (deep / f"fakerun-{os.geteuid()}").iterdir()] == []
    # The sweep leaves it alone: refusing it is for when a socket needs it.
    RunDir.sweep({"TMPDIR": str(deep)})


def test_stable_names_never_reuse_an_existing_directory(env, tmp_path):
    first = RunDir.create("job", tmp_path, stable="abcdefgh", environ=env)
    second = RunDir.create("job", tmp_path, stable="abcdefgh", environ=env)
    try:
        assert first.logs.name == "job_abcdefgh"
        assert second.logs != first.logs and second.logs.name.startswith("job_")
        assert first.private.name == "job-abcdefgh" and first.private != second.private
    finally:
        first.remove()
        second.remove()


def test_a_log_dir_that_cannot_be_made_is_one_error_and_leaves_nothing(env, tmp_path):
    """Checked by the config, changed since (or a run id too long for a
    name): the mkdir's OSError was a traceback, the private dir left."""
    (tmp_path / "taken").write_text("a file where the log dir goes")
    with pytest.raises(runtime.RuntimeDirError, match="Not a directory|File exists"):
        RunDir.create("job", tmp_path / "taken" / "logs", environ=env)
    with pytest.raises(runtime.RuntimeDirError, match="File name too long"):
        RunDir.create("j" * 300, tmp_path, environ=env)
    assert [p for p in runtime.runtime_dir(env).iterdir() if p.name.startswith("job-")] == []
