"""Finding a HF Trainer checkpoint to resume from, and reading it as one
that may have been tampered with: every field checked, every file read
without blocking and within a bound; anything else is one CheckpointError
line.

Everything comes from the Trainer's own files: the step and the log history
from trainer_state.json, the model from config.json (its name, else its
architecture and shape, mapped back to the catalog), the clock from the
save's time (trainer_state.json's mtime: the writer stamps each file with
the run's clock at the save). The seed is the command line's: a real resume
reruns the same command (plan.py anchors the loss curve on the history's
last logged loss, so that a resume under another seed still carries on
from it). Checkpoints written before that, with the run's facts in a hidden
`.resume.json` (or trainer_state.json's `fakerun` key), are still read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun.errors import UsageError
from fakerun.system.files import read_regular
from fakerun.world.catalog import models

STATE = "trainer_state.json"
STATE_MAX = 64 << 20  # bytes of trainer_state.json we read at most (a long run's is a few MB)
CONFIG = "config.json"
CONFIG_MAX = 1 << 20  # a model's config.json is a few KB
# Where earlier fakerun checkpoints kept the run's seed, model and clock (read only).
RESUME = ".resume.json"
RESUME_MAX = 4096
LEGACY = "fakerun"  # where trainer_state.json held them before


class CheckpointError(UsageError):
    """A checkpoint cannot be resumed from; the message is one line."""


@dataclass(frozen=True)
class Resume:
    step: int
    time: float
    path: Path
    seed: int | None = None  # the run the checkpoint is of: only an old checkpoint's .resume.json says
    model: str | None = None  # the catalog's name of its model, if it is one of the catalog's
    history: tuple[dict[str, Any], ...] = ()  # its log_history, which the resumed run carries on
    # The factor on the resumed run's losses that makes its curve pass through
    # the history's last logged loss (1.0 for a run of the same seed): plan.py sets it.
    loss_scale: float = 1.0


# What a checkpoint's trainer_state.json may hold: anything else is refused
# with one line rather than crashing (or hanging) the run that resumes it.
MAX_STEP = 2**31 - 1  # a step count as a 32-bit counter holds it
SEED_MAX = 2**63  # |seed| below this: --seed takes any int, but a checkpoint is only trusted so far
# The latest start a checkpoint may carry: year 9000, so that the resumed
# run's clock stays centuries inside what datetime can show.
TIME_MAX = 221845392000.0
SCALARS = (int, float, str, bool, type(None))


def find(path: Path) -> Resume:
    """`path` is a checkpoint directory, or an output dir whose latest
    complete checkpoint is taken."""
    return latest(path, _load, lambda p: (p / STATE).exists() or p.name.startswith("checkpoint-"))


def latest(path: Path, load: Callable[[Path], Resume], is_one: Callable[[Path], bool]) -> Resume:
    """`path` itself when `is_one` says it is a checkpoint, else the latest
    `checkpoint-<step>` in it that `load` accepts (one killed mid-save is
    refused: the one before it is taken)."""
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory")
    if is_one(path):
        return load(path)
    candidates = sorted((p for p in path.glob("checkpoint-*") if step_of(p.name) is not None),
                        key=lambda p: step_of(p.name) or 0, reverse=True)
    for candidate in candidates:
        try:
            return load(candidate)
        except CheckpointError:
            continue
    raise CheckpointError(f"--resume {path}: no complete checkpoint-<step> directory in it")


def saved_steps(root: Path) -> tuple[int, ...]:
    """The steps of the `checkpoint-N` directories in `root`, complete or not,
    as Trainer._sorted_checkpoints globs them for its rotation."""
    try:
        return tuple(sorted(s for p in root.glob("checkpoint-*") if (s := step_of(p.name)) is not None
                            and p.is_dir()))
    except OSError:
        return ()


def step_of(name: str) -> int | None:
    """N of `checkpoint-N` (ASCII digits only: `checkpoint-²` is no checkpoint,
    though "²".isdigit())."""
    digits = name.removeprefix("checkpoint-")
    return int(digits) if digits != name and digits.isascii() and digits.isdigit() else None


def _load(path: Path) -> Resume:
    state = _read_json(path, STATE, STATE_MAX)
    if not isinstance(state, dict):
        raise incomplete(path, STATE, "not a JSON object")
    step = checked(path, "global_step", state.get("global_step"), _whole(1, MAX_STEP),
                    f"a whole number from 1 to {MAX_STEP}")
    history = checked(path, "log_history", state.get("log_history", []), _history,
                       "a list of flat objects, each with a whole number 'step'")
    run, where = _run(path, state)
    time = checked(path, f"{where}time", run.get("time"), number(0, TIME_MAX),
                    "a time in seconds since 1970, before the year 9000")
    seed = checked(path, f"{where}seed", run.get("seed"), _optional(_whole(1 - SEED_MAX, SEED_MAX - 1)),
                    "a whole number")
    model = checked(path, f"{where}model", run.get("model"), _optional(lambda v: isinstance(v, str)),
                     "a model name")
    return Resume(step, float(time), path, seed, model, tuple(history))


def _run(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The run's facts and where they were found: an old checkpoint's RESUME,
    else the key trainer_state.json once held them in; else the Trainer's
    own files (config.json's model, the save's time)."""
    if (path / RESUME).exists():
        run = _read_json(path, RESUME, RESUME_MAX)
        if not isinstance(run, dict):
            raise incomplete(path, RESUME, "not a JSON object")
        return run, f"{RESUME}: "
    legacy = state.get(LEGACY)
    if isinstance(legacy, dict):
        return legacy, f"{LEGACY}."
    return {"time": _saved_at(path), "model": model_of(config_of(path))}, ""


def _saved_at(path: Path) -> float:
    """When the checkpoint was saved: its trainer_state.json's mtime (written
    last, stamped with the run's clock at the save)."""
    try:
        return (path / STATE).stat().st_mtime
    except OSError as exc:
        raise incomplete(path, STATE, exc.strerror or type(exc).__name__) from None


def config_of(path: Path) -> dict[str, Any]:
    """config.json, or nothing where there is none (a checkpoint saved
    without its model: `save_only_model` the other way round is no Trainer's)."""
    if not (path / CONFIG).exists():
        return {}
    config = _read_json(path, CONFIG, CONFIG_MAX)
    if not isinstance(config, dict):
        raise incomplete(path, CONFIG, "not a JSON object")
    return config


def model_of(config: dict[str, Any]) -> str | None:
    """The catalog's model a config.json is of: the one of its architecture
    and shape (a fine-tune saved under any name keeps its base's shape),
    the one it is named after first (Llama-3.1-8B and its Instruct share a
    shape); None if no catalog model has that shape."""
    shape = {key: config.get(key) for key in SHAPE}
    arch = config.get("architectures")
    same = [m for m in models() if [m.arch] == arch
            and (m.hidden, m.layers, m.heads, m.vocab, m.context) == tuple(shape.values())]
    named = str(config.get("_name_or_path", "")).rstrip("/").rsplit("/", 1)[-1].lower()
    # Unnamed (trained from scratch): a base model, never a tuned release (Model.tuned).
    ranked = sorted(same, key=lambda m: (m.name.lower() != named, m.tuned))
    return ranked[0].name if ranked else None


# config.json's keys that give a model's shape, as the catalog's (hidden, layers, heads, vocab, context).
SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings")


def _read_json(path: Path, name: str, cap: int) -> Any:
    try:
        return json.loads(read_regular(path / name, cap))  # a FIFO there: refused, no hang
    except OSError as exc:
        raise incomplete(path, name, exc.strerror or type(exc).__name__) from None
    except (ValueError, RecursionError):  # bad JSON or UTF-8; a number of 5,000 digits; [[[[…
        raise incomplete(path, name, "not JSON") from None


def incomplete(path: Path, name: str, why: str) -> CheckpointError:
    return CheckpointError(f"--resume {path}: not a complete checkpoint ({name}: {why})")


def checked(path: Path, name: str, value: Any, fits: Any, want: str) -> Any:
    if not fits(value):
        shown = json.dumps(value)[:30] if value is not None else "nothing"
        file, _, field = name.rpartition(": ")
        raise incomplete(path, file or STATE, f"{field} should be {want}, got {shown}")
    return value


def _whole(low: int, high: int) -> Any:
    """bool is an int in Python, and 19.9 no step: exactly int, in range."""
    return lambda v: type(v) is int and low <= v <= high


def number(low: float, high: float) -> Any:
    return lambda v: type(v) in (int, float) and low <= v <= high  # NaN fails both comparisons


def _optional(fits: Any) -> Any:
    return lambda v: v is None or fits(v)


def _history(value: Any) -> bool:
    """HF's log_history: flat objects of numbers and strings, each with its step."""
    return isinstance(value, list) and all(
        isinstance(h, dict) and _whole(0, MAX_STEP)(h.get("step")) and all(isinstance(v, SCALARS)
                                                                         for v in h.values())
        for h in value)
