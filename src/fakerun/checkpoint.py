"""Checkpoints on disk (--output-dir) and finding one to resume from.

Layout (Hugging Face Trainer's): `checkpoint-<step>/` with config.json,
model.safetensors.index.json, model-0000k-of-0000n.safetensors, optimizer.pt,
scheduler.pt, rng_state_<rank>.pth and trainer_state.json. Files are small
placeholders whose metadata records the sizes a real checkpoint would have
(the shards are valid safetensors files with no tensors).

A checkpoint is written into a temporary directory, fsynced, and renamed
into place; trainer_state.json is written last. So a kill at any moment
leaves either no `checkpoint-<step>` or a complete one, and `find` only
accepts directories whose trainer_state.json parses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.errors import UsageError
from fakerun.system.files import read_regular
from fakerun.system.rundir import alive
from fakerun.world.identity import Identity
from fakerun.world.physics import checkpoint_bytes, safetensors_shards

STATE = "trainer_state.json"
STATE_MAX = 64 << 20  # bytes of trainer_state.json we read at most (a long run's is a few MB)


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


class CheckpointWriter:
    """An event sink: writes each Checkpoint event's directory under `root`."""

    def __init__(self, root: Path, ident: Identity, seed: int,
                 history: tuple[dict[str, Any], ...] = ()) -> None:
        """`history`: the log_history of the checkpoint this run resumed, which
        it carries forward (as the HF Trainer loads it with the TrainerState)."""
        self.root = root
        self.ident = ident
        self.seed = seed
        self.history: list[dict[str, Any]] = list(history)

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """The log_history checkpoint-`step` holds."""
        return tuple(h for h in self.history if h["step"] <= step)

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            self.history.append({"step": e.step, "epoch": e.epoch, "loss": e.loss, "learning_rate": e.lr,
                                 "grad_norm": e.grad_norm})
        elif isinstance(e, ev.Checkpoint):
            write(self.root / f"checkpoint-{e.step}", self._files(e))

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""

    def _files(self, e: ev.Checkpoint) -> dict[str, bytes]:
        ident, m = self.ident, self.ident.model
        sizes = checkpoint_bytes(ident)
        shards = safetensors_shards(sizes["model"])
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        files = {name: safetensors_placeholder(sizes["model"] / shards) for name in names}
        files["model.safetensors.index.json"] = _json({
            "metadata": {"total_size": int(sizes["model"])},
            "weight_map": weight_map(ident, names)})
        files["config.json"] = _json({
            "architectures": [m.arch], "hidden_size": m.hidden, "num_hidden_layers": m.layers,
            "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads, "vocab_size": m.vocab,
            "max_position_embeddings": m.context, "torch_dtype": "bfloat16",
            "transformers_version": ident.versions.transformers})
        files["optimizer.pt"] = placeholder(sizes["optimizer"])
        files["scheduler.pt"] = placeholder(1064)
        files.update({f"rng_state_{r}.pth": placeholder(14_512) for r in range(ident.world)})
        files[STATE] = _json({  # last: its presence marks a complete checkpoint
            "global_step": e.step, "epoch": e.epoch, "max_steps": ident.hyper.total_steps,
            "log_history": list(self.saved_history(e.step)),
            "fakerun": {"seed": self.seed, "model": m.name, "time": e.time}})
        return files


def write(target: Path, files: dict[str, bytes]) -> None:
    """Write `files` into `target` atomically (temp dir + rename), with the
    modes the process umask gives (0755 and 0644 under the usual 022), as
    the real frameworks do: a sidecar uploader of another user reads them.
    Temp dirs a killed save left in the same directory go first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp = _temp_dir(target, "tmp")
    try:
        for name in sorted(files, key=lambda n: n == STATE):  # trainer_state.json last
            _write_file(tmp / name, files[name])
        _fsync_dir(tmp)
        if target.exists():  # a newer run saving the same step: replace, never half-replace
            old = _temp_dir(target, "old")
            os.rename(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# A save's temporary directories: `.checkpoint-<step>.tmp-<pid>@<host>-<random>`
# (and `.old-`, for the checkpoint it replaces). The writer's pid and host
# tell a dead save's (SIGKILLed mid-write) from a live one's; names from
# before they carried them (`.checkpoint-<step>.tmp-<random>`) go by age.
_TEMP = re.compile(r"\.checkpoint-\d+\.(?:tmp|old)-(?:(\d+)@(.+)-)?[a-z0-9_]{8}")
STALE_S = 3600.0  # a temp dir untouched this long is no live save's (a save takes well under a second)


def _temp_dir(target: Path, kind: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}@{socket.gethostname()}-",
                                dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would stay on the renamed checkpoint
    return tmp


def sweep_stale(root: Path, now: float | None = None) -> list[str]:
    """Remove the temp dirs of saves that died in `root`: only ours (our
    uid, our name pattern, a real directory) and only stale (the writer on
    this host is gone, or untouched for STALE_S). Returns what went."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            match = _TEMP.fullmatch(entry.name)
            if match is None:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                pid, host = match.groups()
                dead = pid is not None and host == socket.gethostname() and not alive(int(pid))
                if dead or now - st.st_mtime > STALE_S:
                    shutil.rmtree(entry.path)
                    removed.append(entry.name)
    return removed


def _umask() -> int:
    """The process umask (reading it means setting it: put it straight back;
    the launcher is one thread)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


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
    try:
        state = json.loads(read_regular(path / STATE, STATE_MAX))  # a FIFO there: refused, no hang
    except OSError as exc:
        raise _incomplete(path, exc.strerror or type(exc).__name__) from None
    except (ValueError, RecursionError):  # bad JSON or UTF-8; a number of 5,000 digits; [[[[…
        raise _incomplete(path, "not JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("fakerun"), dict):
        raise _incomplete(path, "no 'fakerun' object in it")
    run = state["fakerun"]
    step = _checked(path, "global_step", state.get("global_step"), _whole(1, MAX_STEP),
                    f"a whole number from 1 to {MAX_STEP}")
    time = _checked(path, "fakerun.time", run.get("time"), _number(0, TIME_MAX),
                    "a time in seconds since 1970, before the year 9000")
    seed = _checked(path, "fakerun.seed", run.get("seed"), _optional(_whole(1 - SEED_MAX, SEED_MAX - 1)),
                    "a whole number")
    model = _checked(path, "fakerun.model", run.get("model"), _optional(lambda v: isinstance(v, str)),
                     "a model name")
    history = _checked(path, "log_history", state.get("log_history", []), _history,
                       "a list of flat objects, each with a whole number 'step'")
    return Resume(step, float(time), path, seed, model, tuple(history))


def _incomplete(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"--resume {path}: not a complete checkpoint ({STATE}: {why})")


def _checked(path: Path, name: str, value: Any, fits: Any, want: str) -> Any:
    if not fits(value):
        shown = json.dumps(value)[:30] if value is not None else "nothing"
        raise _incomplete(path, f"{name} should be {want}, got {shown}")
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


def weight_map(ident: Identity, shards: list[str]) -> dict[str, str]:
    names = ["model.embed_tokens.weight"]
    for layer in range(ident.model.layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                     "post_attention_layernorm"):
            names.append(f"model.layers.{layer}.{part}.weight")
    names += ["model.norm.weight", "lm_head.weight"]
    per = math.ceil(len(names) / len(shards))
    return {name: shards[i // per] for i, name in enumerate(names)}


def safetensors_placeholder(size: float) -> bytes:
    """A valid safetensors file with no tensors; its metadata says how big
    the real shard is."""
    header = json.dumps({"__metadata__": {"format": "pt", "fakerun_placeholder": "true",
                                          "size_bytes": str(int(size))}}).encode()
    return struct.pack("<Q", len(header)) + header


def placeholder(size: float) -> bytes:
    return f"fakerun placeholder: a real file here is {int(size)} bytes\n".encode()


def _json(body: Any) -> bytes:
    return (json.dumps(body, indent=2) + "\n").encode()


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # less the umask
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
