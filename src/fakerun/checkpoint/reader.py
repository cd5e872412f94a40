"""Finding a checkpoint to resume from, and reading it as one that may
have been tampered with: every field checked, every file read without
blocking and within a bound; anything else is one CheckpointError line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun.errors import UsageError
from fakerun.system.files import read_regular

STATE = "trainer_state.json"
STATE_MAX = 64 << 20  # bytes of trainer_state.json we read at most (a long run's is a few MB)
# The run's own facts (seed, model, clock), beside what the Trainer saves:
# a hidden file, so that no loader trips on a key of ours in its files.
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
    seed: int | None = None  # the run the checkpoint is of (absent in a hand-made one)
    model: str | None = None
    history: tuple[dict[str, Any], ...] = ()  # its log_history, which the resumed run carries on


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
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory")
    if (path / STATE).exists() or path.name.startswith("checkpoint-"):
        return _load(path)
    candidates = sorted((p for p in path.glob("checkpoint-*") if _step_of(p.name) is not None),
                        key=lambda p: _step_of(p.name) or 0, reverse=True)
    for candidate in candidates:
        try:
            return _load(candidate)
        except CheckpointError:
            continue  # an incomplete one (killed mid-save): try the one before
    raise CheckpointError(f"--resume {path}: no complete checkpoint-<step> directory in it")


def _step_of(name: str) -> int | None:
    """N of `checkpoint-N` (ASCII digits only: `checkpoint-²` is no checkpoint,
    though "²".isdigit())."""
    digits = name.removeprefix("checkpoint-")
    return int(digits) if digits != name and digits.isascii() and digits.isdigit() else None


def _load(path: Path) -> Resume:
    state = _read_json(path, STATE, STATE_MAX)
    if not isinstance(state, dict):
        raise _incomplete(path, STATE, "not a JSON object")
    step = _checked(path, "global_step", state.get("global_step"), _whole(1, MAX_STEP),
                    f"a whole number from 1 to {MAX_STEP}")
    history = _checked(path, "log_history", state.get("log_history", []), _history,
                       "a list of flat objects, each with a whole number 'step'")
    run, where = _run(path, state)
    time = _checked(path, f"{where}time", run.get("time"), _number(0, TIME_MAX),
                    "a time in seconds since 1970, before the year 9000")
    seed = _checked(path, f"{where}seed", run.get("seed"), _optional(_whole(1 - SEED_MAX, SEED_MAX - 1)),
                    "a whole number")
    model = _checked(path, f"{where}model", run.get("model"), _optional(lambda v: isinstance(v, str)),
                     "a model name")
    return Resume(step, float(time), path, seed, model, tuple(history))


def _run(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The run's facts and where they were found: RESUME; else the key that
    trainer_state.json once held them in; else none (a checkpoint saved by a
    real Trainer: its run's seed and clock are unknown)."""
    if (path / RESUME).exists():
        run = _read_json(path, RESUME, RESUME_MAX)
        if not isinstance(run, dict):
            raise _incomplete(path, RESUME, "not a JSON object")
        return run, f"{RESUME}: "
    legacy = state.get(LEGACY)
    return (legacy, f"{LEGACY}.") if isinstance(legacy, dict) else ({"time": 0.0}, "")


def _read_json(path: Path, name: str, cap: int) -> Any:
    try:
        return json.loads(read_regular(path / name, cap))  # a FIFO there: refused, no hang
    except OSError as exc:
        raise _incomplete(path, name, exc.strerror or type(exc).__name__) from None
    except (ValueError, RecursionError):  # bad JSON or UTF-8; a number of 5,000 digits; [[[[…
        raise _incomplete(path, name, "not JSON") from None


def _incomplete(path: Path, name: str, why: str) -> CheckpointError:
    return CheckpointError(f"--resume {path}: not a complete checkpoint ({name}: {why})")


def _checked(path: Path, name: str, value: Any, fits: Any, want: str) -> Any:
    if not fits(value):
        shown = json.dumps(value)[:30] if value is not None else "nothing"
        file, _, field = name.rpartition(": ")
        raise _incomplete(path, file or STATE, f"{field} should be {want}, got {shown}")
    return value


def _whole(low: int, high: int) -> Any:
    """bool is an int in Python, and 19.9 no step: exactly int, in range."""
    return lambda v: type(v) is int and low <= v <= high


def _number(low: float, high: float) -> Any:
    return lambda v: type(v) in (int, float) and low <= v <= high  # NaN fails both comparisons


def _optional(fits: Any) -> Any:
    return lambda v: v is None or fits(v)


def _history(value: Any) -> bool:
    """HF's log_history: flat objects of numbers and strings, each with its step."""
    return isinstance(value, list) and all(
        isinstance(h, dict) and _whole(0, MAX_STEP)(h.get("step")) and all(isinstance(v, SCALARS)
                                                                         for v in h.values())
        for h in value)
