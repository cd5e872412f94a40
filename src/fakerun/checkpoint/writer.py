"""What the Trainer writes at a checkpoint event, in its layout, as small
placeholders whose metadata records the sizes a real checkpoint would have
(the shards are valid safetensors files with no tensors)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint.reader import STATE
from fakerun.checkpoint.store import write
from fakerun.world.identity import Identity
from fakerun.world.physics import checkpoint_bytes, safetensors_shards


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
