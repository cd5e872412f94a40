"""The files of a model and its optimizer that more than one layout saves
(the HF Trainer's checkpoint-N/ and its final export, the default style's
checkpoint-N/): what transformers' save_pretrained writes of the model, and
torch.save archives of the optimizer's, scheduler's and RNGs' states, each
in the pinned version's format.

- Weights: safetensors shards whose headers hold the model's real tensors
  (names, dtypes, shapes, offsets: checkpoint/safetensors.py); their data is
  left out, or (`sparse`) left as a hole of the true size where the file
  system keeps holes. The index's total_size is the true size either way.
- optimizer.pt, scheduler.pt, rng_state*.pth: torch.save archives of plain
  data, which load without running anything (checkpoint/torchsave.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakerun.checkpoint import safetensors, tensorsave, torchsave
from fakerun.checkpoint.store import write_file
from fakerun.world import draws
from fakerun.world.identity import Identity
from fakerun.world.tensors import CONFIG, DTYPES, GENERATION_CONFIG, Layout, layout

# AdamW's hyper-parameters as TrainingArguments sets them by default.
BETAS, EPS = (0.9, 0.999), 1e-08


def major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass(frozen=True)
class ModelFiles:
    """One run's model, as save_pretrained of its pinned transformers writes it."""

    ident: Identity
    name_or_path: str = ""  # the script's --model_name_or_path: config.json's _name_or_path
    sparse: bool = False

    @functools.cached_property
    def layout(self) -> Layout:
        return layout(self.ident.model, DTYPES[self.ident.gpu.precision][0])

    @functools.cached_property
    def shards(self) -> list[safetensors.Shard]:
        return safetensors.shards(self.layout.tensors, self.ident.versions.transformers)

    def weights(self) -> tuple[dict[str, bytes], dict[str, int]]:
        """The shard files (and the index, if more than one), and the sizes
        (larger) they are to have on disk."""
        files = {s.name: s.header() for s in self.shards}
        sizes = {s.name: s.size() for s in self.shards} if self.sparse else {}
        if len(self.shards) > 1:
            files[safetensors.INDEX] = safetensors.index(self.shards, self.ident.versions.transformers)
        return files, sizes

    def config(self) -> bytes:
        """PretrainedConfig.save_pretrained: to_json_string(use_diff=True),
        sorted, indented (configuration_utils.py at v4.46.3); the dtype's key
        is `torch_dtype` in 4.x and `dtype` in 5.x (v5.0.0's to_dict). An
        empty _name_or_path (a model built from its config) is the default,
        which the diff leaves out."""
        m, lay, version = self.ident.model, self.layout, self.ident.versions.transformers
        dtype_key = "dtype" if major(version) >= 5 else "torch_dtype"
        body: dict[str, Any] = {
            "architectures": [m.arch], "model_type": lay.model_type, "hidden_size": m.hidden,
            "intermediate_size": lay.intermediate, "num_hidden_layers": m.layers,
            "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads, "vocab_size": m.vocab,
            "max_position_embeddings": m.context, "tie_word_embeddings": lay.tied,
            dtype_key: DTYPES[self.ident.gpu.precision][1], "transformers_version": version}
        if self.name_or_path:
            body["_name_or_path"] = self.name_or_path
        return as_json(body, sort=True)

    def generation_config(self) -> bytes:
        """What save_pretrained writes for a model that can generate (every
        *ForCausalLM): GenerationConfig.from_model_config of config.json, whose
        diff against the defaults is its origin and version (the token ids it
        would copy are not in this config.json); generation/configuration_utils.py
        at v4.46.3, `to_json_string(use_diff=True)`, sorted."""
        return as_json({"_from_model_config": True, "transformers_version": self.ident.versions.transformers},
                       sort=True)

    def saved(self) -> tuple[dict[str, bytes], dict[str, int]]:
        """Everything save_pretrained writes: config, generation config, weights."""
        files, sizes = self.weights()
        return {CONFIG: self.config(), GENERATION_CONFIG: self.generation_config(), **files}, sizes


def export(root: Path, files: dict[str, bytes], sizes: dict[str, int], time: float) -> None:
    """A script's final save_pretrained into its output dir itself: each file
    replaced whole (a reader sees the old or the new, never half)."""
    for name, data in files.items():
        write_file(root / name, data, mtime=time, size=sizes.get(name, 0))


@dataclass(frozen=True)
class AdamW:
    """The Trainer's torch.optim.AdamW: its adam_beta1/2, adam_epsilon and
    weight_decay (TrainingArguments' defaults)."""

    betas: tuple[float, float] = BETAS
    eps: float = EPS
    weight_decay: float = 0.0


def param_groups(ident: Identity, lr: float, params: list[list[Any]], adam: AdamW) -> list[dict[str, Any]]:
    """Optimizer.state_dict()'s param_groups as the Trainer makes them
    (create_optimizer: [{"params", "weight_decay"}, {"params", "weight_decay": 0.0}],
    the decayed weights, then biases and norms): each group's own keys, then
    add_param_group's setdefault of AdamW's defaults in their order (torch/
    optim/adamw.py at 2.3.1 and 2.5.1; 2.9.1's AdamW is an Adam with
    decoupled_weight_decay, adam.py), LambdaLR's initial_lr, the params last.
    transformers 5.x on torch 2.8 and later defaults to adamw_torch_fused
    (training_args.py default_optim). One betas tuple, the defaults', in every group."""
    torch_29 = tuple(int(p) for p in ident.versions.torch.split(".")[:2]) >= (2, 9)
    fused = True if major(ident.versions.transformers) >= 5 and torch_29 else None
    flags = ("amsgrad", "maximize", "foreach") if torch_29 else ("amsgrad", "foreach", "maximize")
    defaults: dict[str, Any] = {"lr": lr, "betas": adam.betas, "eps": adam.eps}
    defaults |= {flag: None if flag == "foreach" else False for flag in flags}
    defaults |= {"capturable": False, "differentiable": False, "fused": fused}
    if torch_29:
        defaults["decoupled_weight_decay"] = True
    defaults["initial_lr"] = ident.hyper.max_lr
    return [{"weight_decay": decay, **defaults, "params": group}
            for decay, group in zip((adam.weight_decay, 0.0), params, strict=True)]


def optimizer(files: ModelFiles, lr: float) -> dict[str, Any]:
    """AdamW's state_dict as the Trainer groups parameters, its
    per-parameter moments (tensors) left out."""
    tensors = files.layout.tensors
    decayed = [i for i, t in enumerate(tensors) if len(t.shape) > 1]
    rest = [i for i, t in enumerate(tensors) if len(t.shape) <= 1]
    return {"state": {}, "param_groups": param_groups(files.ident, lr, [decayed, rest], AdamW())}


def scheduler(step: int, base_lr: float, lr: float) -> dict[str, Any]:
    """LambdaLR's state_dict (torch/optim/lr_scheduler.py): the schedule
    function itself is not saved (None)."""
    return {"base_lrs": [base_lr, base_lr], "last_epoch": step, "verbose": False, "_step_count": step + 1,
            "_get_lr_called_within_step": False, "_last_lr": [lr, lr], "lr_lambdas": [None, None]}


def optimizer_files(files: ModelFiles, seed: int, step: int, lr: float) -> dict[str, bytes]:
    """optimizer.pt and scheduler.pt at `step`."""
    base = files.ident.hyper.max_lr
    ids = draws.rng(seed, "serialization_id", step)
    torch, states = files.ident.versions.torch, optimizer(files, lr)
    return {"optimizer.pt": torchsave.archive("optimizer.pt", states, serial(ids), torch),
            "scheduler.pt": torchsave.archive("scheduler.pt", scheduler(step, base, lr), serial(ids), torch)}


def rng_files(ident: Identity, seed: int, step: int) -> dict[str, bytes]:
    """Trainer._save_rng_state: `rng_state.pth` on one process, one
    `rng_state_<process_index>.pth` per process otherwise (trainer.py at
    v4.46.3 and v5.0.0); of its states only Python's is plain data."""
    ids = draws.rng(seed, "serialization_id", step, "rng")
    names = ["rng_state.pth"] if ident.world <= 1 else [f"rng_state_{r}.pth" for r in range(ident.world)]
    return {name: torchsave.archive(name, {"python": draws.rng(seed, "rng_state", step, r).getstate()},
                                    serial(ids), ident.versions.torch)
            for r, name in enumerate(names)}


def serial(r: Any) -> str:
    """An archive's `.data/serialization_id` as torch writes it (two 64-bit
    numbers: checkpoint/tensorsave.py), drawn from the seed so the bytes repeat."""
    return tensorsave.serialization_id(r)


def as_json(body: Any, sort: bool = False) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=sort) + "\n").encode()
