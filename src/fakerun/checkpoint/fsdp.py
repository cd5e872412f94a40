"""The HF Trainer's checkpoint files under FSDP (`--fsdp "full_shard
auto_wrap"`), as the pinned transformers and the accelerate it installs
write them: trainer.py `_save_checkpoint`, `save_model` and
`_save_optimizer_and_scheduler` (their FSDP branches, alike at v4.42.4,
v4.44.2, v4.46.3 and v5.0.0), and accelerate's utils/fsdp_utils.py
`save_fsdp_model` / `save_fsdp_optimizer` (the same names and branches at
v0.32.1, v0.33.0, v1.1.1 and v1.12.0: the newest accelerate released by each
transformers release that satisfies its requirement, `accelerate>=0.21.0`,
`>=0.26.0`, `>=1.1.0`: ACCELERATE).

The plugin's state_dict_type is the environment's FSDP_STATE_DICT_TYPE
(what `accelerate launch --fsdp_state_dict_type` sets), FULL_STATE_DICT
when unset (FullyShardedDataParallelPlugin.__post_init__, FSDP1); the
Trainer's fsdp_config sets none of it. Beside the model save_pretrained
writes (FULL only) and scheduler.pt, the RNG states and trainer_state.json:

- FULL_STATE_DICT: `pytorch_model_fsdp.bin`, rank 0's torch.save of the
  full state dict (offload_to_cpu and rank0_only with more than one
  process: "cpu" storages; one process keeps them on its GPU), and
  `optimizer.bin`, rank 0's torch.save of FSDP.optim_state_dict: AdamW's
  `step` (a 0-dim float32 tensor) and `exp_avg`/`exp_avg_sq` (the
  parameter's dtype and shape) per parameter name, and the param groups
  naming the parameters;
- SHARDED_STATE_DICT: `pytorch_model_fsdp_0/` and `optimizer_0/`,
  dist_cp.save_state_dict({"model": ...}) and ({"optimizer": ...}) through
  a FileSystemWriter (checkpoint/distcp.py): every parameter and moment a
  ShardedTensor chunked along dim 0 over the ranks (FSDP's
  _ext_chunk_tensor), `step` and `param_groups` replicated and saved by
  the rank dedup_save_plans gives them; save_model writes no model.

accelerate logs its "Saving model to" / "Optimizer state saved in" lines
at INFO through accelerate.logging's logger, whose level is the root
logger's (WARNING, run_clm's basicConfig sets none) unless
ACCELERATE_LOG_LEVEL says otherwise: at the Trainer's verbosity they are
not printed, and none is here.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from fakerun.checkpoint import distcp, model_files, tensorsave, torchsave
from fakerun.checkpoint.model_files import AdamW, ModelFiles
from fakerun.checkpoint.store import Sparse
from fakerun.checkpoint.tensorsave import Entry
from fakerun.checkpoint.torchpickle import CPU, Storage, Tensor
from fakerun.world import draws
from fakerun.world.tensors import table

FULL, SHARDED = "FULL_STATE_DICT", "SHARDED_STATE_DICT"
STATE_DICT_TYPES = {"FULL_STATE_DICT": FULL, "1": FULL, "SHARDED_STATE_DICT": SHARDED, "3": SHARDED}
ENV = "FSDP_STATE_DICT_TYPE"
MODEL = "pytorch_model_fsdp"  # accelerate utils/constants.py FSDP_MODEL_NAME
OPTIMIZER = "optimizer"  # OPTIMIZER_NAME
ACCELERATE = {"4.42.4": "0.32.1", "4.44.2": "0.33.0", "4.46.3": "1.1.1", "5.0.0": "1.12.0"}
DCP_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
STEP_DTYPE = "F32"  # AdamW's step: torch.tensor(0.0, dtype=_get_scalar_dtype()), float32


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple[int, ...]


class FsdpFiles:
    """One run's FSDP files at a save, under the checkpoint's directory."""

    def __init__(self, model: ModelFiles, seed: int, adam: AdamW, state_dict_type: str) -> None:
        self.model, self.seed, self.adam, self.kind = model, seed, adam, state_dict_type
        self.ident = model.ident
        self.dtype = model.layout.tensors[0].dtype
        self.params = [_Param(t.name, t.shape) for t in model.layout.tensors]

    @property
    def sharded(self) -> bool:
        return self.kind == SHARDED

    def saved(self, step: int, lr: float, folder: str) -> dict[str, bytes | Sparse]:
        """save_fsdp_model's and save_fsdp_optimizer's files at `step`, by
        their names in the checkpoint; `folder` the checkpoint's directory
        as the Trainer joins it (the launch line's output_dir/checkpoint-N)."""
        if self.sharded:
            return {**self._dcp(step, f"{folder}/{MODEL}_0", f"{MODEL}_0", self._model_items()),
                    **self._dcp(step, f"{folder}/{OPTIMIZER}_0", f"{OPTIMIZER}_0", self._optim_items(lr))}
        ids = draws.rng(self.seed, "serialization_id", step, "fsdp")
        torch = self.ident.versions.torch
        location = CPU if self.ident.world > 1 else "cuda:0"  # offload_to_cpu only with several processes
        entries = [Entry(name, shape, n) for n, (name, shape) in enumerate(self._state_dict())]
        model_name, optim_name = f"{MODEL}.bin", f"{OPTIMIZER}.bin"
        optim = self._full_optimizer(step, lr)
        saver, save = (tensorsave.sparse, torchsave.sparse) if self.model.sparse else \
            (tensorsave.archive, torchsave.archive)
        return {model_name: saver(model_name, entries, self.dtype, model_files.serial(ids), torch, location),
                optim_name: save(optim_name, optim, model_files.serial(ids), torch)}

    def _state_dict(self) -> list[tuple[str, tuple[int, ...]]]:
        """model.state_dict()'s keys: the parameters, and a tied output layer
        under its own name too (FSDP's full state dict copies each to the
        CPU: a storage of its own)."""
        keys = [(p.name, p.shape) for p in self.params]
        if self.model.layout.tied:
            spec = table(self.ident.model)
            head = dict(keys)[spec["head"][0][0]]
            keys.append((spec["untied"][0][0], head))
        return keys

    def _groups(self) -> list[list[str]]:
        decayed = [p.name for p in self.params if len(p.shape) > 1]
        return [decayed, [p.name for p in self.params if len(p.shape) <= 1]]

    def _full_optimizer(self, step: int, lr: float) -> dict[str, Any]:
        """FSDP.optim_state_dict under FULL_STATE_DICT: the state by name in
        the order the optimizer's groups hold them, the groups naming them."""
        shapes = {p.name: p.shape for p in self.params}
        state = {name: {"step": Tensor(Storage(STEP_DTYPE, 1), ()),
                        "exp_avg": self._moment(shapes[name]), "exp_avg_sq": self._moment(shapes[name])}
                 for group in self._groups() for name in group}
        groups = model_files.param_groups(self.ident, lr, self._groups(), self.adam)
        return {"state": state, "param_groups": groups}

    def _moment(self, shape: tuple[int, ...]) -> Tensor:
        return Tensor(Storage(self.dtype, math.prod(shape)), shape)

    # -- SHARDED_STATE_DICT -------------------------------------------------------------
    def _chunks(self, shape: tuple[int, ...]) -> tuple[distcp.Chunk, ...]:
        """torch.chunk along dim 0 over the ranks, as FSDP's _ext_chunk_tensor
        shards a parameter (a rank past the last chunk holds none)."""
        world = self.ident.world
        size = -(-shape[0] // world)
        rest = shape[1:]
        return tuple(distcp.Chunk((start, *(0,) * len(rest)), (min(size, shape[0] - start), *rest), rank)
                     for rank, start in enumerate(range(0, shape[0], size)))

    def _model_items(self) -> list[tuple[tuple[str, ...], Any]]:
        dtype = DCP_DTYPES[self.dtype]
        return [(("model", name), distcp.Sharded("", shape, dtype, self._chunks(shape)))
                for name, shape in self._state_dict()]

    def _optim_items(self, lr: float) -> list[tuple[tuple[str, ...], Any]]:
        """The optimizer's flattened state dict: each parameter's step
        (replicated), exp_avg and exp_avg_sq (sharded), then param_groups
        (one bytes item: torch.save of the list)."""
        dtype, shapes = DCP_DTYPES[self.dtype], {p.name: p.shape for p in self.params}
        items: list[tuple[tuple[str, ...], Any]] = []
        for name in (n for group in self._groups() for n in group):
            state = ("optimizer", "state", name)
            items.append(((*state, "step"), distcp.Sharded("", (), DCP_DTYPES[STEP_DTYPE], ())))
            chunks = self._chunks(shapes[name])
            items += [((*state, moment), distcp.Sharded("", shapes[name], dtype, chunks))
                      for moment in ("exp_avg", "exp_avg_sq")]
        groups = model_files.param_groups(self.ident, lr, self._groups(), self.adam)
        saved = torchsave.archive("archive", groups, "0" * 40, self.ident.versions.torch)
        items.append((("optimizer", "param_groups"), distcp.Sharded("", (), None, (), len(saved))))
        return items

    def _dcp(self, step: int, checkpoint_id: str, folder: str,
             items: list[tuple[tuple[str, ...], Any]]) -> dict[str, bytes | Sparse]:
        """One dist_cp.save_state_dict: each rank's .distcp and the .metadata."""
        keyed = [distcp.Sharded(".".join(path), s.shape, s.dtype, s.chunks, s.nbytes) for path, s in items]
        tensors = _deduplicated(keyed, self.ident.world)
        drawn = draws.rng(self.seed, "dcp save_id", step, folder).getrandbits(128)
        save_id = str(uuid.UUID(int=drawn, version=4))  # filesystem.py _generate_uuid: str(uuid.uuid4())
        writer = distcp.Writer(checkpoint_id, save_id, {".".join(path): path for path, _ in items})
        plan = distcp.plan(tensors, self.ident.world, 1, self.ident.versions.torch, writer)
        files: dict[str, bytes | Sparse] = {}
        for name, size in plan.files.items():  # their data left out, or a hole of their size
            files[f"{folder}/{name}"] = Sparse((), size, b"") if self.model.sparse else b""
        files[f"{folder}/{distcp.METADATA}"] = plan.metadata()
        return files


def _deduplicated(items: list[distcp.Sharded], world: int) -> list[distcp.Sharded]:
    """dedup_save_plans (torch/distributed/checkpoint/_dedup_save_plans.py at
    2.3.1 to 2.9.1): every rank plans a replicated item (no chunks here);
    taken in the order the plans meet them (rank 0's items first), each goes
    to the rank with the least planned so far (the lowest of equals), a
    tensor counting its bytes, anything else 1."""
    planned = [0] * world
    out = []
    for s in items:
        for c in s.chunks:  # rank 0's own chunk comes first of each tensor's in its plan
            if c.writer == 0:
                planned[0] += distcp.chunk_bytes(s, c)  # WriteItem.tensor_storage_size
        if s.chunks:
            out.append(s)
            continue
        rank = min(range(world), key=lambda r: planned[r])
        planned[rank] += 4 if s.dtype else 1  # a 0-dim float32's storage, or a bytes item
        out.append(distcp.Sharded(s.key, s.shape, s.dtype, (distcp.Chunk((), (), rank),), s.nbytes))
    return out
