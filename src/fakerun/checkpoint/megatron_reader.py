"""Finding a Megatron checkpoint to resume from, as load_checkpoint finds
it (megatron/training/checkpointing.py _load_base_checkpoint, read_metadata,
find_checkpoint_rank_0): the directory --load names holds
latest_checkpointed_iteration.txt, whose iteration (a whole number; Megatron
refuses anything else) names `iter_NNNNNNN/`, a distributed checkpoint if it
holds a valid metadata.json, else the legacy layout with rank 0's
mp_rank_00[_000]/model_optim_rng.pt. --resume may also name the iteration's
directory itself.

The files say the iteration and (their modification time) when it was
saved; they do not say fakerun's seed or model, which a run resuming one
takes from its own launch line (Megatron's users pass the same flags again),
and nothing here unpickles anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fakerun.checkpoint.reader import MAX_STEP, TIME_MAX, CheckpointError, Resume
from fakerun.system.files import read_regular
from fakerun.world.megatron import TRACKER, iteration_dir

CONFIG = "metadata.json"
TRACKER_MAX = 64  # bytes: an iteration count, or "release"
CONFIG_MAX = 4096
RANK0 = ("mp_rank_00/model_optim_rng.pt", "mp_rank_00_000/model_optim_rng.pt")


def find(path: Path) -> Resume:
    """`path`: the --save/--load directory, or an iteration's directory in it."""
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory")
    if path.name.startswith("iter_") and not (path / TRACKER).exists():
        return _load(path, _step_of(path))
    step = _tracked(path)
    return _load(path / iteration_dir(step), step)


def _tracked(path: Path) -> int:
    """read_metadata: the tracker file's iteration."""
    try:
        text = read_regular(path / TRACKER, TRACKER_MAX).decode("ascii").strip()
    except FileNotFoundError:
        raise CheckpointError(f"--resume {path}: no {TRACKER} in it (Megatron's load_checkpoint would start "
                              "from random)") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
        raise CheckpointError(f"--resume {path}: {TRACKER}: {why}") from None
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_STEP):
        shown = "release" if text == "release" else repr(text[:20])
        raise CheckpointError(f"--resume {path}: {TRACKER} should name an iteration from 1 to {MAX_STEP}, "
                              f"got {shown}")
    return int(text)


def _step_of(path: Path) -> int:
    digits = path.name.removeprefix("iter_")
    if len(digits) == 7 and digits.isascii() and digits.isdigit() and int(digits) >= 1:
        return int(digits)
    raise CheckpointError(f"--resume {path}: not an iteration's directory (iter_NNNNNNN)")


def _load(folder: Path, step: int) -> Resume:
    """The iteration's directory, complete: a distributed checkpoint's
    metadata.json (written last), or the legacy rank 0's file."""
    if not folder.is_dir():
        raise CheckpointError(f"--resume {folder}: no such directory (the tracker names iteration {step})")
    if (folder / CONFIG).exists():
        _config(folder)
    elif not any((folder / name).is_file() for name in RANK0):
        raise CheckpointError(f"--resume {folder}: not a complete checkpoint (neither {CONFIG} nor "
                              f"{RANK0[0]})")
    when = os.stat(folder).st_mtime
    if not 0 <= when <= TIME_MAX:
        raise CheckpointError(f"--resume {folder}: saved at an impossible time ({when})")
    return Resume(step, when, folder)


def _config(folder: Path) -> None:
    """dist_checkpointing's check_is_distributed_checkpoint: a CheckpointingConfig."""
    try:
        config = json.loads(read_regular(folder / CONFIG, CONFIG_MAX))
    except OSError as exc:
        raise CheckpointError(f"--resume {folder}: {CONFIG}: {exc.strerror or type(exc).__name__}") from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"--resume {folder}: {CONFIG}: not JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("sharded_backend"), str):
        raise CheckpointError(f"--resume {folder}: {CONFIG}: not a checkpoint's config (sharded_backend)")
