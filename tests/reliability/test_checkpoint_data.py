"""The data the user already had, and checkpoints tampered with (issues 16, 20).

A resumed run continues what it resumes: the same --metrics-file (appended
to), the Trainer's log_history, the checkpoint's model (the seed is the
command line's, as a real resume reruns the same command; an old
checkpoint's hidden `.resume.json` still names its own). Checkpoints are
readable by others as the umask says, a save killed mid-write leaves nothing
that outlives the next save, and whatever was done to the files a style's
reader reads (each framework's own layout: checkpoint/layouts.py), --resume
gives a resumed run or one line and exit 2: never a traceback, never a hang.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakerun import checkpoint
from fakerun.checkpoint import layouts
from fakerun.checkpoint.reader import model_of as config_model
from tests.conftest import FAKERUN, Job, Runner, wait_until
from tests.e2e.test_restarts import CRASH
from tests.other_user import OTHER_UID, needs_root, run_as_other_user
from tests.reliability.test_output_faults import own_lines

RUN = ("--nproc", "2", "--speed", "0", "--output", "jsonl")
# Seed 3 saves at steps 5, 10 and 15 in every style but Lightning's (whose
# ModelCheckpoint saves at the fit's end): a preempted run is one stopped after step 10.
STEPS, SAVED, SEED = 15, 10, "3"
RESUME_TIMEOUT_S = 30.0  # a hang (a FIFO read) fails the test here instead of stalling the suite
# A Trainer's launch line (transformers' default pin): a log every 2 steps, a save every 5.
TRAINER = ("--style", "hf")
TRAINER_LINE = ("train.py", "--model_name_or_path", "meta-llama/Llama-3.2-1B", "--save_steps", "5",
                "--logging_steps", "2", "--per_device_train_batch_size", "1")


def train(runner: Runner, out: Path, *extra: str, steps: int = STEPS, script: tuple[str, ...] = ()) -> Job:
    job = runner.run(*RUN, "--max-steps", str(steps), "--seed", SEED, "--output-dir", str(out), *extra, *script)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    return job


def preempted(out: Path) -> Path:
    """The last checkpoint removed, as if the job was preempted before it:
    the latest one left."""
    shutil.rmtree(out / f"checkpoint-{STEPS}")
    return max(out.glob("checkpoint-*"), key=step_of)


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix("checkpoint-"))


def resume(runner: Runner, target: Path | None, *extra: str, script: tuple[str, ...] = ()) -> Job:
    """--resume `target` (None: the latest in the --output-dir `extra` names)."""
    where = ("--resume",) if target is None else ("--resume", str(target))
    return runner.run(*RUN, "--max-steps", str(STEPS), *where, *extra, *script, timeout=RESUME_TIMEOUT_S)


def refused(job: Job, says: str = "fakerun: error: --resume ") -> str:
    """The job was refused with exit 2 and one line; that line."""
    lines = own_lines(job.stderr)
    assert job.proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(says), job.stderr[-2000:]
    assert job.stdout == ""  # nothing started
    return lines[0]


def history_of(ckpt: Path) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = json.loads((ckpt / checkpoint.STATE).read_text())["log_history"]
    return history


def model_of(job: Job) -> str:
    return str(job.of("run_identity")[0]["identity"]["model"]["name"])


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


def test_resume_carries_the_log_history_forward(runner: Runner, tmp_path: Path):
    """As the HF Trainer does: TrainerState.load_from_json keeps the
    checkpoint's log_history, and the resumed run appends its logging steps
    to it; under the same seed the whole history is the uninterrupted run's."""
    whole, out = tmp_path / "whole", tmp_path / "out"
    train(runner, whole, *TRAINER, script=TRAINER_LINE)
    train(runner, out, *TRAINER, script=TRAINER_LINE)
    ckpt = preempted(out)
    carried = history_of(ckpt)
    job = resume(runner, None, *TRAINER, "--seed", SEED, "--output-dir", str(out), script=TRAINER_LINE)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    history = history_of(out / f"checkpoint-{STEPS}")
    assert history[:len(carried)] == carried
    assert [h["step"] for h in history] == list(range(2, STEPS + 1, 2))  # --logging_steps 2, no evaluation
    assert history == history_of(whole / f"checkpoint-{STEPS}")


def test_a_restart_carries_the_log_history_forward(runner: Runner, tmp_path: Path):
    """--max-restarts: the next attempt resumes the last checkpoint in-process,
    and its saves hold the history from step 1 too (the bare HF style logs
    every step)."""
    out = tmp_path / "out"
    job = runner.run(*CRASH, *TRAINER, "--max-restarts", "1", "--output-dir", str(out), "--output", "jsonl")
    assert job.proc.returncode == 0 and job.of("restart"), job.stderr[-2000:]
    last = max(out.glob("checkpoint-*"), key=step_of)
    assert [h["step"] for h in history_of(last) if "loss" in h] == list(range(1, step_of(last) + 1))


def test_resume_under_another_seed_keeps_the_checkpoints_model(runner: Runner, tmp_path: Path):
    """Changed with issue 20: the seed is the command line's (the files hold
    none of ours); the model is still the checkpoint's (config.json), though
    seed 9 alone draws another."""
    out = tmp_path / "out"
    model = model_of(train(runner, out, *TRAINER))
    ckpt = preempted(out)
    fresh = runner.run(*RUN, *TRAINER, "--max-steps", str(STEPS), "--seed", "9")
    assert model_of(fresh) != model
    job = resume(runner, ckpt, *TRAINER, "--seed", "9")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert (job.of("run_identity")[0]["identity"]["seed"], model_of(job)) == (9, model)
    assert [s["step"] for s in job.of("step")] == list(range(SAVED + 1, STEPS + 1))


@pytest.mark.parametrize("style", ["torchrun", "hf"])
def test_resume_with_another_model_is_one_line(runner: Runner, tmp_path: Path, style: str):
    out = tmp_path / "out"
    model = model_of(train(runner, out, "--style", style))
    ckpt = preempted(out)
    other = "pythia-6.9b" if model != "pythia-6.9b" else "pythia-1.4b"
    line = refused(resume(runner, ckpt, "--style", style, "--model", other), f"fakerun: error: --model {other}")
    assert model in line
    assert resume(runner, ckpt, "--style", style, "--model", model.upper()).proc.returncode == 0  # the same one


# -- item 6: modes ----------------------------------------------------------
STYLES = ("torchrun", "hf", "deepspeed", "megatron", "lightning")
RECOVERY = "zero_to_fp32.py"  # DeepSpeed adds the owner's x bit: os.stat(dst).st_mode | stat.S_IEXEC


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the test process's umask (the jobs inherit it); restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("mask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_checkpoints_get_the_umasks_modes(runner: Runner, tmp_path: Path, umask, mask: int, dirs: int,
                                          files: int, style: str):
    umask(mask)
    out = tmp_path / "out"
    train(runner, out, "--style", style)
    for path in out.rglob("*"):
        want = dirs if path.is_dir() else files | (stat.S_IXUSR if path.name == RECOVERY else 0)
        assert stat.S_IMODE(path.stat().st_mode) == want, path


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
@pytest.mark.parametrize("style", STYLES)
def test_a_sidecar_of_another_user_reads_the_checkpoints(runner: Runner, open_dir: Path, umask, style: str):
    train(runner, open_dir / "out", "--style", style)
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


# -- item 12: tampered checkpoints, in each style's layout -------------------
@dataclass(frozen=True)
class Layout:
    """Where a style's preempted run left its latest checkpoint (paths
    relative to the output dir), and what its reader reads."""

    style: str
    folder: str  # the checkpoint's directory (or, for Lightning, its file)
    read: tuple[str, ...]  # the files its reader reads
    others: str  # a glob of its earlier checkpoints, removed so that none is left to fall back on


LAYOUTS = {
    "hf": Layout("hf", f"checkpoint-{SAVED}", (f"checkpoint-{SAVED}/{checkpoint.STATE}",
                                               f"checkpoint-{SAVED}/config.json"), "checkpoint-5"),
    "torchrun": Layout("torchrun", f"checkpoint-{SAVED}", (f"checkpoint-{SAVED}/config.json",
                                                           f"checkpoint-{SAVED}/scheduler.pt"), "checkpoint-5"),
    "deepspeed": Layout("deepspeed", f"global_step{SAVED}", ("latest", f"global_step{SAVED}/mp_rank_00_model_states.pt"),
                        "global_step5"),
    "megatron": Layout("megatron", f"iter_{SAVED:07d}", ("latest_checkpointed_iteration.txt",
                                                         f"iter_{SAVED:07d}/metadata.json"), "iter_0000005"),
    "lightning": Layout("lightning", f"lightning_logs/version_0/checkpoints/epoch=0-step={SAVED}.ckpt",
                        (f"lightning_logs/version_0/checkpoints/epoch=0-step={SAVED}.ckpt",), "none"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """pristine(style): the output dir of a run of `style` stopped after its
    save at step 10, its earlier checkpoints removed; made once per style,
    each example tampers a copy."""
    @functools.cache
    def make(style: str) -> Path:
        out = tmp_path_factory.mktemp(f"pristine-{style}") / "out"
        done = subprocess_run(*RUN, "--style", style, "--max-steps", str(SAVED), "--seed", SEED,
                              "--output-dir", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        layout = LAYOUTS[style]
        assert (out / layout.folder).exists() and all((out / name).exists() for name in layout.read)
        for other in out.glob(layout.others):
            shutil.rmtree(other)
        return out
    return make


def subprocess_run(*args: str) -> subprocess.CompletedProcess[str]:
    """fakerun run directly: the runner fixture is function-scoped, a module's fixture is not."""
    return subprocess.run([*FAKERUN, *args], capture_output=True, timeout=60, text=True)


def copy_of(pristine: Callable[[str], Path], style: str, into: Path) -> Path:
    shutil.copytree(pristine(style), into / "out")
    return into / "out"


def resume_latest(runner: Runner, style: str, out: Path) -> Job:
    return resume(runner, None, "--style", style, "--output-dir", str(out))


def json_field(name: str, key: str, value: Any) -> Callable[[Path], None]:
    def change(out: Path) -> None:
        body = json.loads((out / name).read_text())
        body[key] = value
        (out / name).write_text(json.dumps(body))
    return change


def pickled_field(name: str, key: str, value: Any) -> Callable[[Path], None]:
    """`key` of the dict a torch.save archive pickles set to `value`."""
    def change(out: Path) -> None:
        repickle(out / name, lambda body: {**body, key: value})
    return change


def repickle(path: Path, change: Callable[[Any], Any]) -> None:
    """The archive rewritten with its data.pkl's object changed (ours pickle
    plain data: pickle.loads reads them)."""
    with zipfile.ZipFile(path) as zf:
        records = [(info.filename, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records:
            zf.writestr(name, pickle.dumps(change(pickle.loads(data)), protocol=2)
                        if name.endswith("/data.pkl") else data)


class Command:
    """Pickled as a call of os.system: unpickled by anything but a restricted
    reader, it touches `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def text(name: str, body: bytes) -> Callable[[Path], None]:
    return lambda out: (out / name).write_bytes(body)


def replaced(name: str, by: str) -> Callable[[Path], None]:
    """`name` replaced by a FIFO, a symlink loop or a directory."""
    def change(out: Path) -> None:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        {"fifo": lambda: os.mkfifo(path), "loop": lambda: path.symlink_to(path.name), "dir": path.mkdir}[by]()
    return change


def removed(name: str) -> Callable[[Path], None]:
    return lambda out: (out / name).unlink()


def stamped(name: str, when: float) -> Callable[[Path], None]:
    return lambda out: os.utime(out / name, (when, when))


def renamed(name: str, to: str) -> Callable[[Path], None]:
    return lambda out: (out / name).rename(out / to)


def common(name: str, *but: str) -> dict[str, Callable[[Path], None]]:
    """What may happen to any file a reader reads (`but` those that leave
    a checkpoint the reader still resumes)."""
    cases = {"a FIFO": replaced(name, "fifo"), "a symlink loop": replaced(name, "loop"),
             "a directory": replaced(name, "dir"), "removed": removed(name), "empty": text(name, b""),
             "not UTF-8": text(name, b"\xff\xfe\x00{")}
    return {f"{name} {how}": change for how, change in cases.items() if how not in but}


HF_STATE, HF_CONFIG = LAYOUTS["hf"].read
TR_CONFIG, TR_LAST = LAYOUTS["torchrun"].read
DS_LATEST, DS_STATES = LAYOUTS["deepspeed"].read
MG_TRACKER, MG_CONFIG = LAYOUTS["megatron"].read
(PL_CKPT,) = LAYOUTS["lightning"].read
# Before 1970 (ext4 clamps a time after 2446, so none after the year 9000 can be set).
PAST = -1e9
# A checkpoint without config.json (or one a symlink loop hides) is one saved
# without its model: resumed, its model the seed's. scheduler.pt marks the
# default style's checkpoint complete: its contents are not read.
WITHOUT_CONFIG = ("removed", "a symlink loop")
MARK_ONLY = ("empty", "not UTF-8")
TAMPERED: dict[str, dict[str, Callable[[Path], None]]] = {
    "hf": {
        "global_step 1e999": json_field(HF_STATE, "global_step", math.inf),
        "global_step -5": json_field(HF_STATE, "global_step", -5),
        "global_step 19.9": json_field(HF_STATE, "global_step", 19.9),
        "global_step true": json_field(HF_STATE, "global_step", True),
        "global_step 2**64": json_field(HF_STATE, "global_step", 2**64),
        "log_history not a list": json_field(HF_STATE, "log_history", {"step": 1}),
        "log_history nested": json_field(HF_STATE, "log_history", [{"step": 1, "loss": [[[1]]]}]),
        "log_history without steps": json_field(HF_STATE, "log_history", [{"loss": 1.0}]),
        "state a list": text(HF_STATE, b"[1, 2]"),
        "state deeply nested": text(HF_STATE, b"[" * 100_000),
        "state a 5000-digit number": text(HF_STATE, b"9" * 5000),
        "saved before 1970": stamped(HF_STATE, PAST),
        "config a list": text(HF_CONFIG, b"[1, 2]"),
        "config of 2 MB": text(HF_CONFIG, json.dumps({"x": "x" * (2 << 20)}).encode()),
        **common(HF_STATE), **common(HF_CONFIG, *WITHOUT_CONFIG),
    },
    "torchrun": {
        "named checkpoint-0": renamed("checkpoint-10", "checkpoint-0"),
        "named checkpoint-2**64": renamed("checkpoint-10", f"checkpoint-{2**64}"),
        "saved before 1970": stamped(TR_LAST, PAST),
        "config a list": text(TR_CONFIG, b"[1, 2]"),
        "config deeply nested": text(TR_CONFIG, b"{\"a\":" * 100_000),
        **common(TR_CONFIG, *WITHOUT_CONFIG), **common(TR_LAST, *MARK_ONLY),
    },
    "deepspeed": {
        "latest names nothing": text(DS_LATEST, b"  \n"),
        "latest names a parent": text(DS_LATEST, b"../global_step10"),
        "latest names a missing tag": text(DS_LATEST, b"global_step7"),
        "latest names '..'": text(DS_LATEST, b".."),
        "latest with a NUL": text(DS_LATEST, b"global_step10\x00"),
        "latest with an escape": text(DS_LATEST, b"global_step10\x1b[2J"),
        "states not a zip": text(DS_STATES, b"PK\x03\x04 not really"),
        "states truncated": lambda out: (out / DS_STATES).write_bytes((out / DS_STATES).read_bytes()[:300]),
        "states global_steps -5": pickled_field(DS_STATES, "global_steps", -5),
        "states global_steps 1e999": pickled_field(DS_STATES, "global_steps", math.inf),
        "states global_steps true": pickled_field(DS_STATES, "global_steps", True),
        "states a list": lambda out: repickle(out / DS_STATES, lambda body: [body]),
        **common(DS_LATEST), **common(DS_STATES),
    },
    "megatron": {
        "tracker says release": text(MG_TRACKER, b"release"),
        "tracker 0": text(MG_TRACKER, b"0"),
        "tracker -5": text(MG_TRACKER, b"-5"),
        "tracker 2**64": text(MG_TRACKER, str(2**64).encode()),
        "tracker in fullwidth digits": text(MG_TRACKER, "１０".encode()),
        "tracker names a missing iteration": text(MG_TRACKER, b"7"),
        "metadata a list": text(MG_CONFIG, b"[1, 2]"),
        "metadata without a backend": json_field(MG_CONFIG, "sharded_backend", 5),
        "metadata deeply nested": text(MG_CONFIG, b"[" * 100_000),
        "saved before 1970": stamped(LAYOUTS["megatron"].folder, PAST),
        **common(MG_TRACKER), **common(MG_CONFIG),
    },
    "lightning": {
        "not a zip": text(PL_CKPT, b"PK\x03\x04 not really"),
        "truncated": lambda out: (out / PL_CKPT).write_bytes((out / PL_CKPT).read_bytes()[:300]),
        "global_step -5": pickled_field(PL_CKPT, "global_step", -5),
        "global_step 19.9": pickled_field(PL_CKPT, "global_step", 19.9),
        "global_step 2**64": pickled_field(PL_CKPT, "global_step", 2**64),
        "a list": lambda out: repickle(out / PL_CKPT, lambda body: [body]),
        **common(PL_CKPT),
    },
}
CASES = [(style, how) for style, hows in TAMPERED.items() for how in hows]


@pytest.mark.parametrize(("style", "how"), CASES, ids=[f"{s}: {h}" for s, h in CASES])
def test_a_tampered_checkpoint_is_one_line(runner: Runner, tmp_path: Path, pristine, style: str, how: str):
    out = copy_of(pristine, style, tmp_path)
    TAMPERED[style][how](out)
    line = refused(resume_latest(runner, style, out))
    assert line.isprintable()  # nothing of the files' raw to the terminal
    with pytest.raises(checkpoint.CheckpointError):  # in-process too: the same finder
        layouts.find(style, out)


@pytest.mark.parametrize("style", ["deepspeed", "lightning"])
def test_a_pickled_command_never_runs(runner: Runner, tmp_path: Path, pristine, style: str):
    """The .pt and .ckpt readers unpickle no class or function of the file's:
    a model-states file naming os.system is refused (DeepSpeed's reader takes
    plain data only); a .ckpt's (whose real ones name torch's rebuild
    functions) is read as an opaque value, and the run resumes. Neither runs it."""
    out = copy_of(pristine, style, tmp_path)
    marker = tmp_path / "ran"
    name = LAYOUTS[style].read[-1]
    repickle(out / name, lambda body: {**body, "args": Command(marker)})
    job = resume_latest(runner, style, out)
    if style == "deepspeed":
        assert "holds posix.system" in refused(job)
    else:
        assert job.proc.returncode == 0 and job.of("run_finished"), job.stderr[-2000:]
    assert not marker.exists()


def test_a_checkpoint_dir_named_with_a_superscript_is_none(runner: Runner, tmp_path: Path):
    """`checkpoint-²`: "²".isdigit(), but int("²") raises. Not a checkpoint;
    the latest real one is taken."""
    out = tmp_path / "out"
    train(runner, out)
    saved = preempted(out)
    for ckpt in out.glob("checkpoint-*"):
        ckpt.rename(out / ("checkpoint-²" if ckpt == saved else f"checkpoint-{step_of(ckpt)}²"))
    refused(resume(runner, out))
    (out / "checkpoint-²").rename(saved)
    job = resume(runner, out)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert job.of("step")[0]["step"] == step_of(saved) + 1


# -- checkpoints of fakerun before issue 20 ------------------------------------
@pytest.fixture
def old_format(pristine, tmp_path: Path) -> Path:
    """A checkpoint as fakerun wrote it before issue 20 (in every style): the
    Trainer's files and the run's facts in a hidden `.resume.json`."""
    out = copy_of(pristine, "hf", tmp_path)
    ckpt = out / LAYOUTS["hf"].folder
    config = json.loads((ckpt / "config.json").read_text())
    facts = {"seed": int(SEED), "model": config_model(config), "time": (ckpt / checkpoint.STATE).stat().st_mtime}
    (ckpt / checkpoint.RESUME).write_text(json.dumps(facts))
    return ckpt


@pytest.mark.parametrize("style", ["torchrun", "hf"])
def test_an_old_checkpoint_resumes_its_own_seed(runner: Runner, old_format: Path, style: str):
    """Before issue 20 the default style wrote the Trainer's layout too: an
    old checkpoint-N resumes under either, its seed winning."""
    job = resume(runner, old_format, "--style", style, "--seed", "9")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert job.of("run_identity")[0]["identity"]["seed"] == int(SEED)  # .resume.json's still wins
    assert [s["step"] for s in job.of("step")] == list(range(SAVED + 1, STEPS + 1))


OLD_TAMPERED = {
    "time 1e300": json_field(checkpoint.RESUME, "time", 1e300),
    "time NaN": json_field(checkpoint.RESUME, "time", math.nan),
    "seed a string": json_field(checkpoint.RESUME, "seed", "3"),
    "seed 2**70": json_field(checkpoint.RESUME, "seed", 2**70),
    "model a number": json_field(checkpoint.RESUME, "model", 5),
    "run facts a list": text(checkpoint.RESUME, b"[1, 2]"),
    "run facts a FIFO": replaced(checkpoint.RESUME, "fifo"),
    "run facts of 1 MB": text(checkpoint.RESUME, json.dumps({"model": "x" * (1 << 20)}).encode()),
}


@pytest.mark.parametrize("how", OLD_TAMPERED)
def test_a_tampered_old_checkpoint_is_one_line(runner: Runner, old_format: Path, how: str):
    """Under the default style, which wrote them."""
    OLD_TAMPERED[how](old_format)
    refused(resume(runner, old_format))


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


def tamper(out: Path, layout: Layout, data: st.DataObject) -> str:
    """One change to one of the output dir's files or to the checkpoint's
    directory (two draws in three: a file its reader reads, or that
    directory); what it was."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    name = data.draw(st.sampled_from(files) | st.sampled_from(layout.read) | st.just(layout.folder))
    path = out / name
    hows = ["mtime", "rename"] if path.is_dir() else ["bytes", "truncate", "remove", "fifo", "mtime"]
    if name.endswith(".json"):
        hows.append("json")
    elif path.is_file() and zipfile.is_zipfile(path):
        hows.append("pickle")
    how = data.draw(st.sampled_from(hows))
    if how == "json":
        path.write_text(json.dumps(replace_somewhere(json.loads(path.read_text()), data)))
    elif how == "pickle":
        repickle(path, lambda body: replace_somewhere(body, data))
    elif how == "bytes":
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        raw[at:at + 1] = data.draw(st.binary(min_size=0, max_size=4))
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:data.draw(st.integers(0, 64))])
    elif how == "remove":
        path.unlink()
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "mtime":
        when = data.draw(st.floats(0, 1e12))
        os.utime(path, (when, when))
    else:
        path.rename(path.with_name(path.name[:data.draw(st.integers(0, len(path.name)))]
                                   + data.draw(st.text("0123456789²-_", min_size=1, max_size=12))))
    return f"{how} {name}"


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_change_to_a_checkpoint_resumes_or_is_one_line(runner: Runner, tmp_path: Path, pristine,
                                                          style: str, data: st.DataObject):
    work = Path(tempfile.mkdtemp(prefix="example-", dir=tmp_path))  # tmp_path is the same for every example
    out = copy_of(pristine, style, work)
    change = tamper(out, LAYOUTS[style], data)
    job = resume_latest(runner, style, out)
    assert "Traceback" not in job.stderr, f"{change}: {job.stderr[-2000:]}"
    if job.proc.returncode == 2:
        assert refused(job, "fakerun: error: ").isprintable(), change
    else:
        assert job.proc.returncode == 0, f"{change}: {job.stderr[-2000:]}"
        assert job.of("run_finished")
