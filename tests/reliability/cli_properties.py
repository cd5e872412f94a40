"""The properties of test_cli_property.py (see there), each a @given
function as it was written there: hypothesis derandomizes a property from
its own source, so the examples drawn are the same ones. Not collected
here (no test_ module); run side by side by test_cli_property.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fakerun.config.options import free_port
from tests.conftest import Job, Runner, job_processes

OPTIONS = ("--nproc", "--master-port", "--max-restarts", "--node-timeout", "--seed", "--speed",
           "--exit-after-time", "--collective-timeout", "--rdzv-timeout", "--fail-rank", "--fail-step",
           "--start-time", "--lifeline", "--rdzv-endpoint", "--local-ranks-filter", "--tee")
HOSTILE = ("0", "-1", "1e999", "-1e999", "nan", "inf", "99999999999999999999", "²", "١٢", "1.5", "", " 3",
           "0x10", "1_000", "9" * 400, "2026-01-30T14:23:15", "9999-12-31T23:59:59", "1h2m", "localhost:0")
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.-e²١", max_size=8),
)
TRIPPED = ("Watchdog caught collective operation timeout", "rendezvous timed out",
           # node 0 of several listens on the master address: not this machine's, or its port taken
           "fakerun: error: cannot use ")
BOUND_S = 40
BASE = ("--nproc", "2", "--max-steps", "2", "--speed", "0", "--exit-after-time", "5s", "--output", "jsonl")
# The properties below run one rank (the values they draw are not about sizes),
# and a job of several nodes waits for the others briefly, on a port of its own.
ONE = ("--nproc", "1")
WAIT = ("--rdzv-timeout", "1", "--node-timeout", "1")
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _cwd(runner: Runner) -> Path:
    cwd = runner.tmp_path / f"cwd-{len(runner.jobs)}"
    cwd.mkdir()
    return cwd


def _start(runner: Runner, cwd: Path, *args: str, env: dict[str, str] | None = None, **start) -> Job:
    return runner.start(*BASE, *args, cwd=cwd, env={**os.environ, "FAKERUN_OPTS": "", **(env or {})}, **start)


def _files(top: Path) -> set[str]:
    """Every path under `top`, relative to it (symlinks not followed)."""
    found = set()
    for folder, dirs, names in os.walk(top):
        for name in dirs + names:
            found.add(os.path.relpath(os.path.join(folder, name), top))
    return found


def _unnamed(cwd: Path, before: set[str], named: tuple[str, ...]) -> list[str]:
    """What the job left in `cwd` that was neither there before nor on the
    way to, at, or under a path a value named (or where a symlink it named leads)."""
    places = [os.path.relpath(os.path.realpath(cwd / n), os.path.realpath(cwd)) for n in named]
    places += [os.path.normpath(n) for n in named if not os.path.isabs(n)]
    def on_the_way(path: str) -> bool:
        return any(path == p or p.startswith(path + "/") or path.startswith(p + "/") for p in places)
    return sorted(p for p in _files(cwd) - before if not on_the_way(p))


def _holds(job: Job, where: str, cwd: Path, before: set[str] = frozenset(), named: tuple[str, ...] = ()) -> None:
    """The property, for one job."""
    start = time.monotonic()
    code = job.wait(BOUND_S)
    said = job.stderr
    where = f"{where}: exit {code} after {time.monotonic() - start:.1f} s: {said[-1500:]}"
    assert "Traceback" not in said or "torch/distributed" in said.split("Traceback", 1)[1][:400], where
    if code == 2:
        errors = [line for line in said.splitlines() if line.startswith("fakerun: error:")]
        assert len(errors) == 1 and said.strip().splitlines()[-1] == errors[0], where
        assert not said.startswith(("W", "E", "I")), where  # refused before the launcher spoke
    elif code == 1:
        assert any(t in said for t in TRIPPED), where
    else:
        assert code == 0, where
    assert not job_processes(job.marker), f"{where}: left running"  # the launcher reaps every rank
    stray = _unnamed(cwd, before, named)
    assert stray == [], f"{where}: wrote {stray}"


# -- numeric and time options ---------------------------------------------------
@settings(PROPERTY, max_examples=24)
@given(option=st.sampled_from(OPTIONS), value=VALUES)
# Each of these was a traceback once: always tried, before the drawn ones.
@example(option="--start-time", value="9999-12-31T23:59:59")
@example(option="--speed", value="1e-300")
@example(option="--lifeline", value="9" * 20)
@example(option="--rdzv-endpoint", value="9" * 70)
def test_any_value_runs_or_is_refused_in_one_line(runner, option, value):
    cwd = _cwd(runner)
    _holds(_start(runner, cwd, f"{option}={value}"), f"{option}={value!r}", cwd)


# -- path options -------------------------------------------------------------
PATH_OPTIONS = ("--metrics-file", "--log-dir", "--output-dir", "--resume", "--token-file", "--scenario",
                "--tensorboard")
PLACES = {  # what each value names, in a working directory set up by _setting
    "new": "new", "parents to make": "missing/parents/new", "a directory": "adir", "a file": "afile",
    "a FIFO": "fifo", "a dangling symlink": "dangling", "under a dangling symlink": "dangling/new",
    "a symlink loop": "loop", "under a symlink loop": "loop/new", "/dev/null": "/dev/null",
    "a read-only directory": "ro", "under a read-only directory": "ro/new", "a name too long": "n" * 300,
    "a path too long": "d/" * 2100, "a name not in UTF-8": "\udcff\udcfe", "under a file": "afile/new",
}


def _setting(cwd: Path) -> set[str]:
    """The odd places a path option's value may name; what is there before."""
    (cwd / "adir").mkdir()
    (cwd / "afile").write_text("a line\n")
    (cwd / "afile").chmod(0o600)  # private, as a --token-file must be
    os.mkfifo(cwd / "fifo")
    (cwd / "dangling").symlink_to("nowhere")
    (cwd / "loop").symlink_to("loop")
    (cwd / "ro").mkdir(mode=0o555)  # read-only to any user but root
    return _files(cwd)


@settings(PROPERTY, max_examples=14)
@given(option=st.sampled_from(PATH_OPTIONS), place=st.sampled_from(sorted(PLACES)))
# Found by this property; each was a traceback, a hang or a write in the wrong place.
@example(option="--scenario", place="a FIFO")  # read_text hung for ever
@example(option="--log-dir", place="a name too long")  # mkdir in the launcher: a traceback
@example(option="--metrics-file", place="a name too long")
@example(option="--resume", place="a name too long")
@example(option="--log-dir", place="a name not in UTF-8")  # every rank failed to say hello
@example(option="--output-dir", place="a name not in UTF-8")  # UnicodeEncodeError in the launcher
@example(option="--tensorboard", place="under a file")  # the event file's directory (a guard)
def test_any_path_runs_or_is_refused_in_one_line(runner, option, place):
    cwd = _cwd(runner)
    before = _setting(cwd)
    value = PLACES[place]
    job = _start(runner, cwd, *ONE, option, value)
    _holds(job, f"{option} {place} ({value[:40]!r})", cwd, before, named=(value,))


# -- $FAKERUN_OPTS ------------------------------------------------------------
FRAGMENTS = ("--seed 3", "--nproc 3", "--speed 1e-300", "--max-steps 9", "'unterminated", '"also', "\\",
             "--no-such-option", "-z", "train.py", "train.py --lr 3e-4", "--", "--nodes 2", "--nodes 0",
             "--nodes 99999999999", "--nodes 2 --no-theatre", "--nnodes 2", "--nnodes 2 --node-rank 1",
             "--token=abc", "--rdzv-id=../../up", "--standalone", "--scenario straggler", "--style hf",
             "--style nope", "--model Llama-3.1-8B", "--output rich", "--list-scenarios", "--help",
             "--version", "--tee 0", "--resume", "--funny", "=", "--seed=\udcff", "--max-restarts 2",
             "--rdzv-endpoint localhost:0", "--nproc=", "--fail-step 1", "--log-dir=", "--output-dir=",
             "--token=\udcff", "--scenario=/dev/null")


@settings(PROPERTY, max_examples=12)
@given(fragments=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=3))
@example(fragments=["--nodes 2"])  # two agents, which must not read $FAKERUN_OPTS again (a guard)
# Found while probing; each was a traceback or a write in the wrong place.
@example(fragments=["--log-dir="])  # Path(''): the run's logs in the working directory
@example(fragments=["--token=\udcff"])  # UnicodeEncodeError in the ranks' hello
def test_any_fakerun_opts_run_or_are_refused_in_one_line(runner, fragments):
    cwd = _cwd(runner)
    opts = " ".join(fragments)
    job = _start(runner, cwd, *ONE, *WAIT, "--master-port", str(free_port()), env={"FAKERUN_OPTS": opts})
    _holds(job, f"FAKERUN_OPTS={opts!r}", cwd)


# -- the Slurm variables fakerun reads ------------------------------------------
SLURM = {
    "SLURM_JOB_ID": ("", "12345", "12345_7", "../../up", "9" * 300, "١٢", "\udcff", " "),
    "SLURM_NNODES": ("", "1", "2", "0", "-1", "²", "١٢", "9" * 30, " 2", "1e3"),
    "SLURM_NODEID": ("", "0", "1", "2", "-1", "²", "9" * 30, "01"),
    "SLURM_JOB_NODELIST": ("", "gpu001", "gpu[001-004]", "gpu[", "gpu[1-", "[]", ",", "gpu[3-1],cpu",
                           "a" * 300, "\udcff", "host with space"),
}
SLURM_ENV = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in SLURM.items()})


@settings(PROPERTY, max_examples=12)
@given(slurm=SLURM_ENV)
@example(slurm={"SLURM_JOB_ID": "9" * 70000})  # the hello undecodable: the rendezvous waited 900 s
@example(slurm={"SLURM_JOB_ID": "../../up", "SLURM_NNODES": "2"})  # a run id that names no directory (a guard)
@example(slurm={"SLURM_JOB_ID": "\udcff", "SLURM_NNODES": "2"})  # hashed into the token: a traceback
@example(slurm={"SLURM_JOB_ID": "12345", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[001-002]"})  # node 0 (a guard)
def test_any_slurm_variables_run_or_are_refused_in_one_line(runner, slurm):
    """The run id comes from $SLURM_JOB_ID here (the marker rides in the
    script's arguments); the per-user secret a Slurm job's token derives
    from is made in a home of the test's, outside the working directory."""
    cwd = _cwd(runner)
    home = runner.tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **slurm}
    job = runner.start(*BASE, *ONE, *WAIT, "--master-port", str(free_port()), cwd=cwd,
                       env={**env, "FAKERUN_OPTS": ""}, script_marker=True)
    _holds(job, f"{slurm}", cwd)
