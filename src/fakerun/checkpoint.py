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

import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import events as ev
from .identity import Identity
from .sim import checkpoint_bytes, safetensors_shards

STATE = "trainer_state.json"


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from; the message is one line."""


@dataclass(frozen=True)
class Resume:
    step: int
    time: float
    path: Path


class CheckpointWriter:
    """An event sink: writes each Checkpoint event's directory under `root`."""

    def __init__(self, root: Path, ident: Identity, seed: int) -> None:
        self.root = root
        self.ident = ident
        self.seed = seed
        self.history: list[dict[str, Any]] = []

    def event(self, e: Any) -> None:
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
            "log_history": [h for h in self.history if h["step"] <= e.step],
            "fakerun": {"seed": self.seed, "model": m.name, "time": e.time}})
        return files


def write(target: Path, files: dict[str, bytes]) -> None:
    """Write `files` into `target` atomically (temp dir + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in sorted(files, key=lambda n: n == STATE):  # trainer_state.json last
            _write_file(tmp / name, files[name])
        _fsync_dir(tmp)
        if target.exists():  # a newer run saving the same step: replace, never half-replace
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find(path: Path) -> Resume:
    """`path` is a checkpoint directory, or an output dir whose latest
    complete checkpoint is taken."""
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory")
    if (path / STATE).exists() or path.name.startswith("checkpoint-"):
        return _load(path)
    candidates = sorted((p for p in path.glob("checkpoint-*") if p.name[11:].isdigit()),
                        key=lambda p: int(p.name[11:]), reverse=True)
    for candidate in candidates:
        try:
            return _load(candidate)
        except CheckpointError:
            continue  # an incomplete one (killed mid-save): try the one before
    raise CheckpointError(f"--resume {path}: no complete checkpoint-<step> directory in it")


def _load(path: Path) -> Resume:
    try:
        state = json.loads((path / STATE).read_text())
        return Resume(int(state["global_step"]), float(state["fakerun"]["time"]), path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"--resume {path}: not a complete checkpoint ({type(exc).__name__} "
                              f"reading {STATE})") from None


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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
