"""Files another local user plants where fakerun keeps its own (issue 15).

The attacks run as uid 65534 (tests/other_user.py) in a stand-in for /tmp:
a fresh sticky, world-writable directory that the jobs get as $TMPDIR. It
is /tmp to fakerun in every way that matters here, but a trap set in it
stalls no one else's fakerun on this machine; it goes, with whatever was
planted, when the test ends. Each attack must leave start-up and `fakerun
smi` unaffected (smi answers within 1 s), or be refused with one line.
The jobs run under an address-space cap, so code that reads /dev/zero
fails with a MemoryError instead of taking the machine down.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from fakerun.smi import GpuRow, Snapshot
from tests.conftest import FAKERUN, Job, Runner
from tests.other_user import OTHER_UID, needs_root, run_as_other_user, start_as_other_user

pytestmark = needs_root

UID = os.geteuid()
RUN = ("--nproc", "2", "--max-steps", "3", "--speed", "0", "--output", "jsonl")
JOB_TIMEOUT_S = 30.0
SMI_S = 1.0  # how promptly `fakerun smi` must answer
NO_JOB = "fakerun smi: no running fakerun job found\n"
ATTACKER_JOB = "attacker-job"


@pytest.fixture
def shared_tmp():
    path = Path(tempfile.mkdtemp(prefix="hostile-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # as root: the other user's plants too


@pytest.fixture
def env(shared_tmp) -> dict[str, str]:
    environ = {**os.environ, "TMPDIR": str(shared_tmp)}
    environ.pop("XDG_RUNTIME_DIR", None)  # the runtime dir is then $TMPDIR/fakerun-<uid>
    return environ


@pytest.fixture(autouse=True)
def capped_memory():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = psutil.Process().memory_info().vms + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def short_dir_as_found():
    """/tmp/fakerun-<uid>, which a job with a long $TMPDIR creates if it is
    not there: removed again then (if empty: a job of someone else's may be
    using it by now)."""
    path = Path(f"/tmp/fakerun-{UID}")
    existed = path.exists()
    yield path
    if not existed:
        with contextlib.suppress(OSError):
            path.rmdir()


def run_job(runner: Runner, env: dict[str, str]) -> Job:
    job = runner.start(*RUN, env=env)
    try:
        job.wait(JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait(10)
        pytest.fail(f"fakerun did not finish within {JOB_TIMEOUT_S}s: stalled by a planted file")
    return job


def smi(env: dict[str, str]) -> tuple[int, str, str, float]:
    start = time.monotonic()
    try:
        done = subprocess.run([*FAKERUN, "smi"], env=env, capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("fakerun smi hung on a planted file")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def assert_unaffected(runner: Runner, env: dict[str, str]) -> None:
    job = run_job(runner, env)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    code, out, err, took = smi(env)
    assert ATTACKER_JOB not in out + err
    assert (code, out, err) == (1, "", NO_JOB)
    assert took < SMI_S, f"fakerun smi took {took:.2f}s"


# -- the attacks, as uid 65534 -----------------------------------------------

def plant_fifo(tmp: str) -> None:
    trap = Path(tmp) / "fakerun-trap"
    trap.mkdir()
    os.mkfifo(trap / "launcher.pid")


def plant_zero(tmp: str) -> None:
    trap = Path(tmp) / "fakerun-trap"
    trap.mkdir()
    (trap / "launcher.pid").symlink_to("/dev/zero")


def fake_snapshot() -> str:
    gpu = GpuRow(rank=0, node=0, index=0, host="evil-host", name="NVIDIA H100 80GB HBM3",
                 bus_id="00000000:18:00.0", util=100, mem_used_mib=1, mem_total_mib=81559, temp_c=99,
                 power_w=700, power_cap_w=700, pid=1)
    return Snapshot(time=time.time(), run_id=ATTACKER_JOB, driver="535.183.01", cuda="12.2",
                    process="/evil", step=1, gpus=[gpu]).to_json()


def plant_fake_job(folder: str, live_pid: int) -> None:
    fake = Path(folder)
    fake.mkdir(mode=0o777)
    (fake / "launcher.pid").write_text(f"{live_pid}\n")
    (fake / "smi.json").write_text(fake_snapshot())


def plant_inside(places: list[str]) -> dict[str, str]:
    """Try every planting in the directories fakerun does look in: what each
    attempt got ("planted", or the errno's name)."""
    got = {}
    for place in places:
        try:
            plant_fake_job(os.path.join(place, "job-evil"), 1)
            os.mkfifo(os.path.join(place, "job-evil", "fifo"))
            got[place] = "planted"
        except OSError as exc:
            got[place] = errno.errorcode.get(exc.errno or 0, str(exc))
    return got


def squat(target: str, how: str) -> None:
    """The runtime dir's name, taken first: a directory, or a symlink to one."""
    if how == "dir":
        os.mkdir(target, 0o777)
    else:
        os.mkdir(target + ".real", 0o777)
        os.symlink(target + ".real", target)


# -- the tests -----------------------------------------------------------------

def places_we_look(shared_tmp: Path) -> list[str]:
    """The runtime dir (made by the job just run) and the short socket dir if
    it is there."""
    runtime = shared_tmp / f"fakerun-{UID}"
    assert runtime.is_dir(), "the job made no runtime dir"
    return [str(p) for p in (runtime, Path(f"/tmp/fakerun-{UID}")) if p.is_dir()]


def assert_nothing_planted_inside(shared_tmp: Path) -> None:
    places = places_we_look(shared_tmp)
    got = run_as_other_user(plant_inside, places)
    try:
        assert got == {place: "EACCES" for place in places}
    finally:
        for place in places:  # should one have got in, it leaves nothing for other tests
            shutil.rmtree(os.path.join(place, "job-evil"), ignore_errors=True)


@pytest.mark.parametrize("plant", [plant_fifo, plant_zero], ids=["fifo", "dev-zero-symlink"])
def test_a_planted_owner_file_stalls_nothing(runner, shared_tmp, env, plant):
    assert run_as_other_user(plant, str(shared_tmp)) is None
    assert (shared_tmp / "fakerun-trap").lstat().st_uid == OTHER_UID
    assert_unaffected(runner, env)
    assert_nothing_planted_inside(shared_tmp)


def test_a_planted_fake_job_is_never_shown(runner, shared_tmp, env):
    # A live pid of the attacker's own: as alive as a real launcher.
    sleeper = start_as_other_user(time.sleep, 60)
    try:
        run_as_other_user(plant_fake_job, str(shared_tmp / "fakerun-evil"), sleeper.pid)
        assert_unaffected(runner, env)
        assert_nothing_planted_inside(shared_tmp)
    finally:
        sleeper.stop()


@pytest.mark.parametrize("how", ["dir", "symlink"])
def test_a_runtime_dir_taken_by_another_user_is_refused(runner, shared_tmp, env, how):
    target = shared_tmp / f"fakerun-{UID}"
    run_as_other_user(squat, str(target), how)
    problem = (f"is owned by uid {OTHER_UID}, not you (uid {UID}): remove it" if how == "dir"
               else "is a symbolic link: remove it")
    line = f"{target} {problem}, or set TMPDIR or XDG_RUNTIME_DIR elsewhere\n"
    job = run_job(runner, env)
    assert (job.proc.returncode, job.stderr, job.stdout) == (2, f"fakerun: error: {line}", "")
    code, out, err, took = smi(env)
    assert (code, out, err) == (1, "", f"fakerun smi: {line}")
    assert took < SMI_S


def test_a_long_tmpdir_still_runs_over_ipc(runner, shared_tmp, env, short_dir_as_found):
    long_tmp = shared_tmp / ("t" * 110)
    long_tmp.mkdir(mode=0o700)
    job = run_job(runner, {**env, "TMPDIR": str(long_tmp)})
    assert job.proc.returncode == 0, job.stderr[-2000:]
    endpoints = {e["env"]["FAKERUN_COORDINATOR"] for e in job.of("rank_started")}
    assert len(endpoints) == 1
    endpoint = endpoints.pop()
    assert endpoint.startswith(f"ipc://{short_dir_as_found}/"), endpoint
    socket_dir = Path(endpoint.removeprefix("ipc://")).parent
    assert not socket_dir.exists()  # nothing left: neither the socket's dir
    assert list((long_tmp / f"fakerun-{UID}").iterdir()) == []  # nor the job's
