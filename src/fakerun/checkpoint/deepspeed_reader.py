"""Resuming from DeepSpeed's checkpoint (checkpoint/deepspeed.py writes it):
`latest` names the tag, as engine.load_checkpoint reads it, and the tag's
model states give the engine's global_steps and the script's client_state
(its `checkpoint_step`, its arguments: the model and seed); the time is the
file's mtime, the save's moment. The states are read through a restricted
unpickler: plain data, and a tensor only as torch.save names one (its
rebuild function, storage class and persistent id), which reads as None;
anything else refuses the file without running or importing it."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from fakerun.checkpoint.reader import MAX_STEP, SEED_MAX, TIME_MAX, CheckpointError, Resume
from fakerun.system.files import open_regular, read_regular

LATEST = "latest"
LATEST_MAX = 4096
STATES_MAX = 64 << 20  # a model-states pickle we read at most (ours are KBs; the weights are its records)
# What a torch.save pickle of tensors names: each is refused unless listed here.
TENSOR_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}


def find(path: Path) -> Resume:
    """`path` is a save_dir (its `latest` names the tag, as load_checkpoint
    reads it) or a tag's folder."""
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory")
    if (path / LATEST).exists():
        folder = path / _latest_tag(path)
    elif any(path.glob("*model_states.pt")):
        folder = path
    else:
        raise CheckpointError(f"--resume {path}: no 'latest' file in it (DeepSpeed's save_checkpoint writes "
                              "one beside each global_step<N>/)")
    return _load(folder)


def _latest_tag(path: Path) -> str:
    try:
        text = read_regular(path / LATEST, LATEST_MAX).decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _incomplete(path, LATEST, getattr(exc, "strerror", None) or "not text") from None
    # A control character (a NUL, an escape) names no directory we would
    # print raw to the user's terminal in the error that follows.
    if not text or "/" in text or text in (".", "..") or not text.isprintable():
        raise _incomplete(path, LATEST, f"names no tag ({text[:30]!r})")
    return text


def _load(folder: Path) -> Resume:
    names = [n for n in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
             if (folder / n).exists()]
    if not names:
        raise _incomplete(folder, "mp_rank_00_model_states.pt", "missing")
    states, name = _read_states(folder / names[0]), names[0]
    step = states.get("global_steps")
    if not (type(step) is int and 1 <= step <= MAX_STEP):
        raise _incomplete(folder, name, f"global_steps should be a whole number from 1 to {MAX_STEP}")
    args = states.get("args") if isinstance(states.get("args"), dict) else {}
    seed, model = args.get("seed"), args.get("model")
    if not (seed is None or (type(seed) is int and -SEED_MAX < seed < SEED_MAX)):
        raise _incomplete(folder, name, "args' seed should be a whole number")
    if not (model is None or isinstance(model, str)):
        raise _incomplete(folder, name, "args' model should be a model name")
    time = os.stat(folder / name).st_mtime
    if not 0 <= time <= TIME_MAX:
        raise _incomplete(folder, name, "its time is out of range")
    return Resume(step, time, folder, seed, model)


class _PlainData(pickle.Unpickler):
    """Plain data and tensors as torch.save names them (each read as None,
    its storage never loaded); any other class or function refuses the file
    rather than run or import anything."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if (module, name) in TENSOR_GLOBALS or (module == "torch" and name.endswith("Storage")):
            return _no_tensor
        raise pickle.UnpicklingError(f"holds {module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None


def _no_tensor(*_: Any) -> None:
    return None


def _read_states(path: Path) -> dict[str, Any]:
    """Only the archive's central directory and data.pkl are read: the file
    may be gigabytes of tensors (holes, under --sparse-checkpoints)."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as file, zipfile.ZipFile(file) as zf:
            pkl = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl"))
            if zf.getinfo(pkl).file_size > STATES_MAX:
                raise pickle.UnpicklingError("too large")
            with zf.open(pkl) as member:
                states = _PlainData(member).load()
    except OSError as exc:
        raise _incomplete(path.parent, path.name, exc.strerror or type(exc).__name__) from None
    except StopIteration:
        raise _incomplete(path.parent, path.name, "no data.pkl in it") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError, EOFError, RecursionError, MemoryError,
            TypeError, KeyError, IndexError) as exc:
        raise _incomplete(path.parent, path.name, f"not a plain torch.save archive ({exc})"[:120]) from None
    if not isinstance(states, dict):
        raise _incomplete(path.parent, path.name, "not a state dict")
    return states


def _incomplete(path: Path, name: str, why: str) -> CheckpointError:
    return CheckpointError(f"--resume {path}: not a complete checkpoint ({name}: {why})")
