"""The data the user already had, and checkpoints tampered with (issue 16).

A resumed run continues what it resumes: the same --metrics-file (appended
to), the whole log_history, the checkpoint's own run (seed and model).
Checkpoints are readable by others as the umask says, a save killed
mid-write leaves nothing that outlives the next save, and whatever was done
to a checkpoint's files, --resume gives a resumed run or one line and exit
2: never a traceback, never a hang.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakerun import checkpoint
from tests.conftest import FAKERUN, Job, Runner, wait_until
from tests.e2e.test_restarts import CRASH
from tests.other_user import OTHER_UID, needs_root, run_as_other_user
from tests.reliability.test_output_faults import own_lines

RUN = ("--nproc", "2", "--speed", "0", "--output", "jsonl")
STEPS, SEED = 15, "3"  # seed 3 saves at steps 5, 10 and 15 (since the draws are jobs people run)
RESUME_TIMEOUT_S = 30.0  # a hang (a FIFO read) fails the test here instead of stalling the suite


def train(runner: Runner, out: Path, *extra: str) -> Job:
    job = runner.run(*RUN, "--max-steps", str(STEPS), "--seed", SEED, "--output-dir", str(out), *extra)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    return job


def preempted(out: Path) -> Path:
    """The last checkpoint removed, as if the job was preempted before it:
    the latest one left."""
    shutil.rmtree(out / f"checkpoint-{STEPS}")
    return max(out.glob("checkpoint-*"), key=step_of)


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix("checkpoint-"))


def resume(runner: Runner, target: Path, *extra: str) -> Job:
    return runner.run(*RUN, "--max-steps", str(STEPS), "--resume", str(target), *extra,
                      timeout=RESUME_TIMEOUT_S)


def refused(job: Job, says: str = "fakerun: error: --resume ") -> str:
    """The job was refused with exit 2 and one line; that line."""
    lines = own_lines(job.stderr)
    assert job.proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(says), job.stderr[-2000:]
    assert job.stdout == ""  # nothing started
    return lines[0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The latest checkpoint of a preempted run, made once: each example tampers a copy."""
    out = tmp_path_factory.mktemp("pristine") / "out"
    done = subprocess.run([*FAKERUN, *RUN, "--max-steps", str(STEPS), "--seed", SEED, "--output-dir", str(out)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return preempted(out)


@pytest.fixture
def saved(pristine: Path, tmp_path: Path) -> Path:
    """The latest checkpoint of a preempted run (in its output dir), a copy
    of its own to change."""
    shutil.copytree(pristine.parent, tmp_path / "out")
    return tmp_path / "out" / pristine.name


def state_of(ckpt: Path, name: str = checkpoint.STATE) -> dict[str, Any]:
    return json.loads((ckpt / name).read_text())


def run_of(ckpt: Path) -> dict[str, Any]:
    """The run's own facts (seed, model, time), beside the Trainer's files."""
    return state_of(ckpt, checkpoint.RESUME)


def retouch(ckpt: Path, change: Callable[[dict[str, Any]], None], name: str = checkpoint.STATE) -> None:
    state = state_of(ckpt, name)
    change(state)
    (ckpt / name).write_text(json.dumps(state))


# -- item 5: what a resumed run keeps --------------------------------------
def test_resume_appends_to_the_metrics_file(runner: Runner, tmp_path: Path):
    out, metrics = tmp_path / "out", tmp_path / "metrics.jsonl"
    train(runner, out, "--metrics-file", str(metrics))
    before = metrics.read_text().splitlines()
    ckpt = preempted(out)
    resume(runner, ckpt, "--metrics-file", str(metrics), "--output-dir", str(out))
    after = metrics.read_text().splitlines()
    assert after[:len(before)] == before  # the preempted run's rows are all still there
    added = [json.loads(line) for line in after[len(before):]]
    assert [r["step"] for r in added if r["type"] == "train"] == list(range(step_of(ckpt) + 1, STEPS + 1))


def test_resume_carries_the_whole_log_history_forward(runner: Runner, saved: Path):
    """As the HF Trainer does: TrainerState.load_from_json keeps the
    checkpoint's log_history, and the resumed steps are appended to it."""
    carried = state_of(saved)["log_history"]
    job = resume(runner, saved, "--output-dir", str(saved.parent))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    history = state_of(saved.parent / f"checkpoint-{STEPS}")["log_history"]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert history[:step_of(saved)] == carried


def test_a_restart_carries_the_log_history_forward(runner: Runner, tmp_path: Path):
    """--max-restarts: the next attempt resumes the last checkpoint in-process,
    and its saves hold the history from step 1 too."""
    out = tmp_path / "out"
    job = runner.run(*CRASH, "--max-restarts", "1", "--output-dir", str(out), "--output", "jsonl")
    assert job.proc.returncode == 0 and job.of("restart"), job.stderr[-2000:]
    last = max(out.glob("checkpoint-*"), key=step_of)
    assert [h["step"] for h in state_of(last)["log_history"]] == list(range(1, step_of(last) + 1))


def test_resume_continues_the_checkpoints_run_whatever_the_seed(runner: Runner, saved: Path):
    run = run_of(saved)
    assert run["seed"] != 9
    job = resume(runner, saved, "--seed", "9")  # another seed than the checkpoint's
    assert job.proc.returncode == 0, job.stderr[-2000:]
    identity = job.of("run_identity")[0]["identity"]
    assert (identity["seed"], identity["model"]["name"]) == (run["seed"], run["model"])


def test_resume_with_another_model_is_one_line(runner: Runner, saved: Path):
    model = run_of(saved)["model"]
    other = "pythia-6.9b" if model != "pythia-6.9b" else "pythia-1.4b"
    line = refused(resume(runner, saved, "--model", other), f"fakerun: error: --model {other}")
    assert model in line
    assert resume(runner, saved, "--model", model.upper()).proc.returncode == 0  # the same one


# -- item 6: modes ----------------------------------------------------------
@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the test process's umask (the jobs inherit it); restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_checkpoints_get_the_umasks_modes(runner: Runner, tmp_path: Path, umask, mask: int, dirs: int,
                                          files: int):
    umask(mask)
    train(runner, tmp_path / "out")
    for ckpt in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(ckpt.stat().st_mode) == dirs, ckpt
        assert {stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()} == {files}, ckpt


def read_all(root: str) -> int:
    return sum(len(p.read_bytes()) for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may enter (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="sidecar-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_a_sidecar_of_another_user_reads_the_checkpoints(runner: Runner, open_dir: Path, umask):
    train(runner, open_dir / "out")
    read = run_as_other_user(read_all, str(open_dir / "out"))
    assert read is not None and read > 0  # None: the reader failed (its traceback is on stderr)


# -- item 12: a save killed mid-write ---------------------------------------
def killed_mid_save(out: Path) -> str:
    """A real writer SIGKILLed while its temp dir exists; that dir's name."""
    files = {f"model-{i:05d}.safetensors": os.urandom(64 * 1024) for i in range(400)}
    pid = os.fork()
    if pid == 0:
        try:
            checkpoint.write(out / "checkpoint-2", files)
        finally:
            os._exit(0)
    try:
        temp = wait_until(lambda: [p.name for p in out.glob(".checkpoint-2.tmp-*")], 10)[0]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return temp


def test_the_next_run_sweeps_a_killed_saves_temp_dir(runner: Runner, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    dead = killed_mid_save(out)
    host = os.uname().nodename
    kept = [f".checkpoint-4.tmp-{os.getpid()}@{host}-abcdefgh",  # a live writer's (this test's pid)
            ".checkpoint-4.tmp-zyxwvuts",  # an older fakerun's, young: it may still be writing
            ".checkpoint-4.tmp-mine",  # not our name
            "notes"]
    for name in kept:
        (out / name).mkdir()
    train(runner, out)
    left = {p.name for p in out.iterdir()}
    assert dead not in left
    assert set(kept) <= left


def test_only_stale_temp_dirs_of_ours_go(tmp_path: Path):
    """Unit-level: by age for names without a writer, never another's, never a file."""
    old = tmp_path / ".checkpoint-4.tmp-zyxwvuts"
    old.mkdir()
    file = tmp_path / ".checkpoint-5.tmp-abcdefgh"
    file.write_text("not a directory")
    theirs = tmp_path / ".checkpoint-6.tmp-12345678"
    theirs.mkdir()
    if os.geteuid() == 0:  # as another user, there is no one else's to make
        os.chown(theirs, OTHER_UID, OTHER_UID)
    later = time.time() + checkpoint.STALE_S + 1
    assert checkpoint.sweep_stale(tmp_path, now=time.time()) == []
    assert checkpoint.sweep_stale(tmp_path, now=later) == [old.name]
    assert file.exists() and (theirs.exists() or os.geteuid() != 0)


# -- item 12: tampered checkpoints ------------------------------------------
def put_fifo(ckpt: Path) -> None:
    (ckpt / checkpoint.STATE).unlink()
    os.mkfifo(ckpt / checkpoint.STATE)


def put_loop(ckpt: Path) -> None:
    (ckpt / checkpoint.STATE).unlink()
    (ckpt / checkpoint.STATE).symlink_to(checkpoint.STATE)


def put_dir(ckpt: Path) -> None:
    (ckpt / checkpoint.STATE).unlink()
    (ckpt / checkpoint.STATE).mkdir()


def field(path: str, value: Any) -> Callable[[Path], None]:
    """`path`: a key of trainer_state.json, or `run.<key>` of the run's facts."""
    def change(ckpt: Path) -> None:
        def edit(state: dict[str, Any]) -> None:
            state[path.removeprefix("run.")] = value
        retouch(ckpt, edit, checkpoint.RESUME if path.startswith("run.") else checkpoint.STATE)
    return change


TAMPERED = {
    "global_step 1e999": field("global_step", math.inf),
    "global_step -5": field("global_step", -5),
    "global_step 19.9": field("global_step", 19.9),
    "global_step true": field("global_step", True),
    "global_step 2**64": field("global_step", 2**64),
    "time 1e300": field("run.time", 1e300),
    "time NaN": field("run.time", math.nan),
    "seed a string": field("run.seed", "3"),
    "seed 2**70": field("run.seed", 2**70),
    "model a number": field("run.model", 5),
    "log_history not a list": field("log_history", {"step": 1}),
    "log_history nested": field("log_history", [{"step": 1, "loss": [[[1]]]}]),
    "log_history without steps": field("log_history", [{"loss": 1.0}]),
    "state a FIFO": put_fifo,
    "state a symlink loop": put_loop,
    "state a directory": put_dir,
    "state a list": lambda c: (c / checkpoint.STATE).write_text("[1, 2]"),
    "state deeply nested": lambda c: (c / checkpoint.STATE).write_text("[" * 100_000),
    "state a 5000-digit number": lambda c: (c / checkpoint.STATE).write_text("9" * 5000),
    "state not UTF-8": lambda c: (c / checkpoint.STATE).write_bytes(b"\xff\xfe\x00{"),
    "run facts a list": lambda c: (c / checkpoint.RESUME).write_text("[1, 2]"),
    "run facts a FIFO": lambda c: ((c / checkpoint.RESUME).unlink(), os.mkfifo(c / checkpoint.RESUME)),
    "run facts of 1 MB": lambda c: (c / checkpoint.RESUME).write_text(json.dumps({"model": "x" * (1 << 20)})),
}


@pytest.mark.parametrize("how", TAMPERED)
def test_a_tampered_checkpoint_is_one_line(runner: Runner, saved: Path, how: str):
    TAMPERED[how](saved)
    refused(resume(runner, saved))
    for other in saved.parent.glob("checkpoint-*"):  # so that none complete is left
        if other != saved:
            shutil.rmtree(other)
    with pytest.raises(checkpoint.CheckpointError):  # the latest (in-process: the same path, 0.3 s less)
        checkpoint.find(saved.parent)


def test_a_checkpoint_dir_named_with_a_superscript_is_none(runner: Runner, saved: Path):
    """`checkpoint-²`: "²".isdigit(), but int("²") raises. Not a checkpoint;
    the latest real one is taken."""
    out = saved.parent
    for ckpt in out.glob("checkpoint-*"):
        ckpt.rename(out / ("checkpoint-²" if ckpt == saved else f"checkpoint-{step_of(ckpt)}²"))
    refused(resume(runner, out))
    (out / "checkpoint-²").rename(saved)
    job = resume(runner, out)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert job.of("step")[0]["step"] == step_of(saved) + 1


# -- the property ------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3),
                    max_leaves=6)


def replace_somewhere(body: Any, data: st.DataObject) -> Any:
    """`body` with one value somewhere in it (or itself) replaced by any JSON."""
    if isinstance(body, (dict, list)) and body and data.draw(st.booleans()):
        keys = list(body) if isinstance(body, dict) else list(range(len(body)))
        key = data.draw(st.sampled_from(keys))
        body[key] = replace_somewhere(body[key], data)
        return body
    return data.draw(JSON)


FIELDS = ("global_step", "run.time", "run.seed", "run.model", "log_history")  # what is read


def tamper(ckpt: Path, data: st.DataObject) -> str:
    """One change to one of the checkpoint's files; what it was. Half the
    changes go to trainer_state.json and the run's facts, the files a resume reads."""
    files = sorted(p.name for p in ckpt.iterdir())
    read = st.sampled_from([checkpoint.STATE, checkpoint.RESUME])
    name = data.draw(st.sampled_from(files) | read)
    path = ckpt / name
    how = data.draw(st.sampled_from(["field", "json", "bytes", "truncate", "remove", "fifo"]
                                    if name in (checkpoint.STATE, checkpoint.RESUME)
                                    else ["bytes", "truncate", "remove"]))
    if how == "field":
        key = data.draw(st.sampled_from(FIELDS))
        field(key, data.draw(st.integers() | st.floats() | JSON))(ckpt)
        return f"{key} changed"
    if how == "json":
        path.write_text(json.dumps(replace_somewhere(json.loads(path.read_text()), data)))
    elif how == "bytes":
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        raw[at:at + 1] = data.draw(st.binary(min_size=0, max_size=4))
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:data.draw(st.integers(0, 64))])
    elif how == "remove":
        path.unlink()
    else:
        path.unlink()
        os.mkfifo(path)
    return f"{how} {name}"


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_change_to_a_checkpoint_resumes_or_is_one_line(runner: Runner, tmp_path: Path, pristine: Path,
                                                          data: st.DataObject):
    work = Path(tempfile.mkdtemp(prefix="example-", dir=tmp_path))  # tmp_path is the same for every example
    ckpt = work / pristine.name
    shutil.copytree(pristine, ckpt)
    change = tamper(ckpt, data)
    job = resume(runner, ckpt, "--output-dir", str(work))
    assert "Traceback" not in job.stderr, f"{change}: {job.stderr[-2000:]}"
    if job.proc.returncode == 2:
        refused(job, "fakerun: error: ")
    else:
        assert job.proc.returncode == 0, f"{change}: {job.stderr[-2000:]}"
        assert job.of("run_finished")
