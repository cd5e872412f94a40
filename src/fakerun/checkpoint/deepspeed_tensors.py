"""The tensors in DeepSpeed's checkpoint files, for a save that writes them
at their true size (--sparse-checkpoints: their data holes), at the places
the engine's state dicts hold them (deepspeed/runtime/engine.py
`_save_checkpoint`, zero/stage_1_and_2.py and bf16_optimizer.py `state_dict`,
zero/stage3.py `_rigid_state_dict`, fp16/fused_optimizer.py `state_dict`, at
v0.14.4 to v0.18.2):

- `module`: the module's state_dict on the saving rank's GPU, 16-bit, a
  tied head a second tensor on the embedding's storage; under ZeRO-3 each
  parameter is its rank's placeholder, an empty tensor (the data lives in
  the partitions);
- the fp32 master weights: ZeRO-1/2's and BF16_Optimizer's flat partition
  of each group, the group padded to a multiple of the NCCL alignment times
  the data-parallel size, the padding in the last rank's partition (the
  saved `single_partition_of_fp32_groups` without it); ZeRO-3's flat group
  of each parameter's partition (ceil(numel / dp) each); FP16_Optimizer's
  whole flat group;
- torch AdamW's state over those flat tensors: `step` (a 0-dim float32 on
  the CPU), `exp_avg`, `exp_avg_sq` (the flat tensor's size, on its GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fakerun.checkpoint.tensorsave import Entry, state_dict
from fakerun.checkpoint.torchpickle import CPU, Ordered, Storage, Tensor
from fakerun.world.tensors import Layout, table

if TYPE_CHECKING:
    from fakerun.world.identity import Identity

NCCL_ALIGNMENT = 2  # stage_1_and_2.py's nccl_start_alignment_factor: 4 bytes of fp16
MASTER = "F32"


@dataclass(frozen=True)
class EngineTensors:
    """One run's engine: its model, its optimizer's two groups (indices into
    the layout's tensors), its data-parallel size and ZeRO stage."""

    ident: Identity
    layout: Layout
    groups: list[list[int]]

    @property
    def dp(self) -> int:
        return self.ident.parallel.dp

    def _numels(self) -> list[int]:
        return [sum(math.prod(self.layout.tensors[n].shape) for n in group) for group in self.groups]

    def paddings(self, last: bool) -> list[int]:
        """Each group's padding: only the last data-parallel rank's partition holds it."""
        align = NCCL_ALIGNMENT * self.dp
        return [-numel % align if last else 0 for numel in self._numels()]

    def partitions(self) -> list[int]:
        """Each group's flat fp32 partition on a rank (the last's padding included)."""
        if self.ident.parallel.zero >= 3:
            return [sum(-(-math.prod(self.layout.tensors[n].shape) // self.dp) for n in group)
                    for group in self.groups]
        padded = zip(self._numels(), self.paddings(True), strict=True)
        return [(numel + pad) // self.dp for numel, pad in padded]

    def flats(self, sizes: list[int], rank: int) -> list[Tensor]:
        location = f"cuda:{rank % self.ident.nproc}"
        return [Tensor(Storage(MASTER, n, location), (n,)) for n in sizes]

    def whole_groups(self, rank: int) -> list[Tensor]:
        """FP16_Optimizer's fp32 flat groups: every parameter, unpartitioned."""
        return self.flats(self._numels(), rank)

    def adam(self, flats: list[Tensor], rank: int) -> dict[int, dict[str, Any]]:
        """torch AdamW's state, by the index of the flat tensor it keeps."""
        return {k: {"step": Tensor(Storage(MASTER, 1, CPU), ()),
                    "exp_avg": self.flats([flat.shape[0]], rank)[0],
                    "exp_avg_sq": self.flats([flat.shape[0]], rank)[0]}
                for k, flat in enumerate(flats)}

    def module(self, rank: int) -> Ordered:
        """module_state_dict() on the saving rank: nn.Module.state_dict()
        (a tied head detached anew from the embedding's storage), under ZeRO-3
        of its placeholders."""
        zero3 = self.ident.parallel.zero >= 3
        entries = [Entry(t.name, (0,) if zero3 else t.shape, n) for n, t in enumerate(self.layout.tensors)]
        if self.layout.tied:
            spec = table(self.ident.model)
            shared = next(e for e in entries if e.name == spec["head"][0][0])
            entries.append(Entry(spec["untied"][0][0], shared.shape, shared.storage))
        return state_dict(entries, self.layout.tensors[0].dtype, f"cuda:{rank % self.ident.nproc}")
