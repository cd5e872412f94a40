"""Hostile sizes and exhausted resources: a job the machine cannot hold is
refused up front with one line and exit 2, before anything is written; a
soft open-files limit too low is raised to the hard one when that is
enough; a fork the system refuses mid-launch stops the ranks already
started, with one line and exit 1.

Limits are set in the job's own process (a preexec_fn), never in the test
runner's. RLIMIT_NPROC does not bind root, so that job runs as uid 65534;
a fork failing half way through a launch is injected: os.fork raising
BlockingIOError (EAGAIN, as Python raises it) after three ranks.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakerun.cli import main as cli
from fakerun.world.topology import Topology
from tests.conftest import Job, Runner
from tests.other_user import OTHER_UID, needs_root, run_as_other_user
from tests.reliability.test_output_faults import own_lines

QUICK = ("--speed", "0", "--max-steps", "3", "--output", "plain")
SEEDED = ("--seed", "1", *QUICK)
REFUSE_WITHIN_S = 10.0  # a refusal reads a few /proc files: it never waits on the sizes asked
HUGE = "99999999999999999999"


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    """A runtime directory of the test's own, so that what a job leaves
    there is not mixed up with other jobs' (XDG_RUNTIME_DIR)."""
    path = tmp_path / "run"
    path.mkdir()
    return path


def env_with(runtime: Path) -> dict[str, str]:
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}


def left_in(root: Path) -> list[str]:
    """What jobs left in their runtime directory `root`."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_one_line(job: Job, code: int, *words: str) -> str:
    lines = own_lines(job.stderr)
    assert job.proc.returncode == code, job.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("fakerun: error: "), job.stderr[-3000:]
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def counted_files(topology: Topology, nodes: int = 1) -> int:
    """The descriptors fakerun counts for a job. (Imported when asked, so
    that the other tests also run, and fail, against the code before.)"""
    from fakerun.config import limits

    return limits.need(topology, nodes).files


def nofile(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the job's open-files limit (lowering both needs no privilege)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- sizes -------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("--nproc", HUGE), ("--nproc-per-node", "at most 131072")),
    (("--nnodes", HUGE), ("nodes", "at most 512")),
    (("--nodes", HUGE, "--no-theatre"), ("nodes", "at most 512")),
    (("--nodes", "3", "--nproc", "200", "--no-theatre"), ("600 ranks", "at most 512")),
    (("--nproc", "2", "--max-steps", HUGE), ("--max-steps", "at most 1000000")),
], ids=["nproc", "nnodes", "nodes", "multinode-world", "max-steps"])
def test_sizes_beyond_what_can_run_are_refused_before_anything_is_written(
        runner: Runner, tmp_path: Path, runtime: Path, args: tuple[str, ...], words: tuple[str, ...]):
    logs = tmp_path / "logs"
    start = time.monotonic()
    job = runner.run(*QUICK, "--log-dir", str(logs), *args,  # later options win: the size asked
                     timeout=REFUSE_WITHIN_S, env=env_with(runtime))
    took = time.monotonic() - start
    assert_one_line(job, 2, *words)
    assert not logs.exists() and left_in(runtime / "fakerun") == [], "written before the sizes were checked"
    print(f"\n{args}: refused in {took:.2f} s")


def test_more_ranks_than_this_machine_holds_are_refused(runner: Runner, tmp_path: Path, runtime: Path):
    """A size any job may have, one rank past what this machine's pids or
    memory hold (by the figures measured per rank)."""
    from fakerun.config import limits
    from fakerun.world.topology import MAX_WORLD

    machine = limits.Machine()
    fits = min(machine.tasks().free / limits.TASKS_PER_RANK, machine.memory_mib().free / limits.RANK_MIB)
    ranks = int(fits) + 1
    if ranks > MAX_WORLD:
        pytest.skip(f"this machine holds more than {MAX_WORLD} ranks")
    logs = tmp_path / "logs"
    job = runner.run("--nproc", str(ranks), *QUICK, "--log-dir", str(logs), env=env_with(runtime),
                     timeout=REFUSE_WITHIN_S)
    print("\n" + assert_one_line(job, 2, f"{ranks} ranks need"))
    assert not logs.exists() and left_in(runtime / "fakerun") == []


# -- open files --------------------------------------------------------------

def test_too_few_open_files_is_one_line_naming_the_limit_and_the_need(runner: Runner, runtime: Path):
    """The issue's case: `ulimit -n 40` and 64 ranks (a traceback before)."""
    job = runner.run("--nproc", "64", *QUICK, env=env_with(runtime), preexec_fn=nofile(40, 40),
                     timeout=REFUSE_WITHIN_S)
    line = assert_one_line(job, 2, "open files", "40")
    assert f"need {counted_files(Topology(1, 64))} open files" in line, line
    assert left_in(runtime / "fakerun") == []


def test_a_limit_libzmq_aborted_under_is_refused_too(runner: Runner, runtime: Path):
    """30 descriptors for 8 ranks: libzmq aborted (`Too many open files
    (src/ipc_listener.cpp:297)`, exit 134) before."""
    job = runner.run("--nproc", "8", *QUICK, env=env_with(runtime), preexec_fn=nofile(30, 30),
                     timeout=REFUSE_WITHIN_S)
    assert_one_line(job, 2, "open files", "30")


def test_a_low_soft_limit_is_raised_to_the_hard_one(runner: Runner, runtime: Path):
    job = runner.run("--nproc", "64", *QUICK, env=env_with(runtime), preexec_fn=nofile(40, 4096))
    assert job.proc.returncode == 0, job.stderr[-3000:]
    assert left_in(runtime / "fakerun") == []


@pytest.mark.parametrize("args, topology, nodes", [
    (("--nproc", "8"), Topology(1, 8), 1),
    (("--nproc", "64"), Topology(1, 64), 1),
    (("--nodes", "2", "--nproc", "8", "--no-theatre"), Topology(2, 8), 2),
], ids=["8", "64", "nodes-2x8"])
def test_the_counted_need_is_enough(runner: Runner, runtime: Path, args: tuple[str, ...],
                                    topology: Topology, nodes: int):
    """Exactly the descriptors counted, soft and hard: the job runs to its
    end (the count is an upper bound); one fewer is refused."""
    need = counted_files(topology, nodes)
    job = runner.run(*args, *QUICK, env=env_with(runtime), preexec_fn=nofile(need, need))
    assert job.proc.returncode == 0, job.stderr[-3000:]
    short = runner.run(*args, *QUICK, env=env_with(runtime), preexec_fn=nofile(need - 1, need - 1),
                       timeout=REFUSE_WITHIN_S)
    assert_one_line(short, 2, str(need))


# -- processes ----------------------------------------------------------------

@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can write (the test's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fakerun-resources-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def limited_launch(workdir: str, nproc: str, limit: int) -> dict[str, object]:
    """In uid 65534's process: `ulimit -u limit`, then fakerun's command
    line in this process (the interpreter under /root is not one that user
    may exec); its exit code and what it wrote on stderr."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))  # lowering needs no privilege
    os.chdir(workdir)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    os.environ.update(TMPDIR=workdir, HOME=workdir)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["--nproc", nproc, *SEEDED])
    return {"code": code, "stderr": err.getvalue()}


@needs_root
def test_too_few_processes_is_one_line_before_any_fork(shared_dir: Path):
    """`ulimit -u 20` and 64 ranks, as a user the limit binds (root's is
    not enforced): forks failed with EAGAIN half way before (a
    BlockingIOError traceback)."""
    # That user cannot read the interpreter's library under /root: what a
    # launch imports (the catalog's readers among it) is loaded here.
    # The same seed in both: an unseeded draw may pick a GPU vendor (and the
    # catalog file it reads) the warm-up did not.
    cli.to_config(cli.build_parser().parse_args(["--nproc", "64", *SEEDED]))
    for module in ("fakerun.launcher.agent", "encodings.idna"):
        importlib.import_module(module)
    result = run_as_other_user(limited_launch, str(shared_dir), "64", 20, timeout=REFUSE_WITHIN_S)
    assert result is not None, "the launch raised (its traceback is on stderr)"
    lines = own_lines(result["stderr"])
    assert result["code"] == 2 and len(lines) == 1, result
    assert lines[0].startswith("fakerun: error: 64 ranks need") and "ulimit -u" in lines[0], lines
    assert left_in(shared_dir / f"fakerun-{OTHER_UID}") == []


FAILING_FORK = """
import os, sys
real, calls = os.fork, []
def fork():
    calls.append(1)
    if len(calls) > 3:
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return real()
os.fork = fork
from fakerun.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_fork_refused_mid_launch_stops_the_ranks_started(runner: Runner, runtime: Path):
    """Three ranks forked, the fourth refused: those three are gone when the
    launcher exits (the fixture checks), one line, exit 1, no traceback of
    the launcher's or the ranks'."""
    job = runner.run("--nproc", "8", *QUICK, env=env_with(runtime),
                     command=[sys.executable, "-c", FAILING_FORK])
    line = assert_one_line(job, 1, "cannot start rank 3", "Resource temporarily unavailable",
                           "3 ranks started were stopped")
    assert "Traceback" not in job.stderr + job.stdout, line
    assert left_in(runtime / "fakerun") == []
