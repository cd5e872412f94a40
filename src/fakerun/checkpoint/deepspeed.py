"""DeepSpeed's checkpoint on disk, as engine.save_checkpoint(save_dir) leaves
it (deepspeedai/DeepSpeed deepspeed/runtime/engine.py, the same at v0.14.4,
v0.15.4, v0.16.4 and v0.18.2):

    <save_dir>/global_step<N>/mp_rank_00_model_states.pt   (data-parallel rank 0;
        zero_pp_rank_<dp>_mp_rank_00_model_states.pt from every rank under ZeRO-3)
    <save_dir>/global_step<N>/[bf16_]zero_pp_rank_<dp>_mp_rank_00_optim_states.pt  (every rank)
    <save_dir>/zero_to_fp32.py   (_copy_recovery_script: rank 0, then chmod +x)
    <save_dir>/latest            (the tag, no newline, after commit: rank 0)

The .pt files are torch.save archives of the engine's state dicts
(`_save_checkpoint`, `_save_zero_checkpoint`, the ZeRO optimizers'
`state_dict`), plain data only (checkpoint/torchsave.py): a container of
tensors keeps its place, emptied (`module`, the fp32 partitions); a lone
tensor or an object (the loss scaler, ZeroStageEnum's class, param slice
mappings' namedtuples, a set) is left out, and the stage is its int. Under
--sparse-checkpoints the containers hold their tensors
(checkpoint/deepspeed_tensors.py: the 16-bit weights, fp32 master
partitions and Adam moments, 2 and 12 bytes a parameter over the
data-parallel ranks), each storage's record a hole of its true size.

The script's final model_engine.save_16bit_model(output_dir) writes one
file, <output_dir>/pytorch_model.bin (engine.py `save_16bit_model`, its
save_filename default, at each pinned version; rank 0 only, nothing beside
it): torch.save of the engine's 16-bit state dict (checkpoint/tensorsave.py,
the storages' data left out, or holes under --sparse-checkpoints).

zero_to_fp32.py is the pinned version's own script (Apache-2.0, header
kept), in data/zero_to_fp32-<version>.txt.

--resume reads `latest` and the tag's model states (checkpoint/
deepspeed_reader.py): the engine's global_steps, and the script's
client_state (its `checkpoint_step`, as DeepSpeedExamples' HelloDeepSpeed
saves it, and its arguments: the model and seed)."""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakerun import events as ev
from fakerun.checkpoint import tensorsave, torchsave
from fakerun.checkpoint.deepspeed_reader import LATEST
from fakerun.checkpoint.deepspeed_tensors import EngineTensors
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.store import Sparse, write, write_file
from fakerun.checkpoint.torchpickle import Tensor
from fakerun.world import draws
from fakerun.world.ds_config import (
    BETAS,
    CLIP,
    model_states,
    optim_states,
    ranks_of,
    tag,
    user_config,
    writes_model_states,
    writes_optim_states,
)
from fakerun.world.loss_scale import LossScaler, restored
from fakerun.world.physics import learning_rate
from fakerun.world.tensors import DEEPSPEED_EXPORT, DTYPES, Layout, layout, table

if TYPE_CHECKING:
    from fakerun.world.identity import Identity

RECOVERY = "zero_to_fp32.py"
EXPORT = DEEPSPEED_EXPORT
EPS = 1e-08  # torch.optim.AdamW's default
WEIGHT_DECAY = 0.1  # the decayed group's, as LLM recipes set it (the other group: 0.0)


@dataclass(frozen=True)
class EngineState:
    """What the engine holds at a save besides its tensors: its step count,
    and the fp16 loss scaler's state (None: bf16, which has no scaler and
    names its optimizer files `bf16_`)."""

    step: int  # global_steps
    scaler: LossScaler | None

    @property
    def bf16(self) -> bool:
        return self.scaler is None

    @property
    def skipped(self) -> int:
        """skipped_steps: overflowed steps, which stepped neither optimizer nor scheduler."""
        return self.scaler.skipped if self.scaler else 0

    @property
    def overflow(self) -> bool:
        """The last step's."""
        return self.scaler is not None and self.scaler.last_overflow == self.scaler.iteration - 1


def engine_state(ident: Identity, step: int, bf16: bool = False) -> EngineState:
    """The state of a run's engine after `step`, its loss scaler replayed
    (for a writer that did not see the steps: the Trainer's)."""
    return EngineState(step, None if bf16 else restored(ident, step))


def saved_files(ident: Identity, state: EngineState, seed: int, client_state: dict[str, Any] | None = None,
                sparse: bool = False) -> dict[str, bytes | Sparse]:
    """Every file one save_checkpoint(save_dir) writes, by its name under
    save_dir: the tag's folder, zero_to_fp32.py, then `latest` (last);
    `sparse`: the .pt files at their true size."""
    return _Save(ident, state, seed, client_state or {}, sparse).files()


def exported_file(ident: Identity, seed: int, bf16: bool = False, sparse: bool = False) -> bytes | Sparse:
    """save_16bit_model's pytorch_model.bin. Its state dict: ZeRO-3's
    _zero3_consolidated_16bit_state_dict gathers each parameter to rank 0's
    CPU (`param.detach().cpu()`) and gives a shared one the very tensor of
    its first name; below ZeRO-3, module_state_dict is nn.Module.state_dict()
    on rank 0's GPU, a tied weight a second tensor on the same storage, the
    location tag "cuda:0" built anew for each storage (serialization.py
    _cuda_tag). The same order either way: each module's parameters, then
    its children's."""
    half = DTYPES["bf16" if bf16 else "fp16"][0]
    model = layout(ident.model, half)
    entries = [tensorsave.Entry(t.name, t.shape, n) for n, t in enumerate(model.tensors)]
    zero3 = ident.parallel.zero >= 3
    if model.tied:  # the output layer is the embedding's parameter: state_dict names it too
        spec = table(ident.model)
        shared = next(e for e in entries if e.name == spec["head"][0][0])
        entries.append(tensorsave.Entry(spec["untied"][0][0], shared.shape, shared.storage,
                                        shared.name if zero3 else None))
    serial = tensorsave.serialization_id(draws.rng(seed, "serialization_id", "export"))
    save = tensorsave.sparse if sparse else tensorsave.archive
    return save(EXPORT, entries, half, serial, ident.versions.torch, location="cpu" if zero3 else "cuda:0")


def mark_executable(path: Path) -> None:
    """_change_recovery_script_permissions: `os.stat(dst).st_mode | stat.S_IEXEC`."""
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


@functools.cache
def recovery_script(version: str) -> bytes:
    """The pinned DeepSpeed's deepspeed/utils/zero_to_fp32.py (the closest
    older one we keep, for a version we do not)."""
    known = sorted((p.name.removeprefix("zero_to_fp32-").removesuffix(".txt")
                    for p in resources.files("fakerun").joinpath("data").iterdir()
                    if p.name.startswith("zero_to_fp32-")), key=_parts)
    older = [v for v in known if _parts(v) <= _parts(version)] or known[:1]
    return resources.files("fakerun").joinpath("data", f"zero_to_fp32-{older[-1]}.txt").read_bytes()


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


class _Save:
    """One save's files and their state dicts."""

    def __init__(self, ident: Identity, state: EngineState, seed: int, client_state: dict[str, Any],
                 sparse: bool) -> None:
        self.ident, self.state, self.client_state, self.sparse = ident, state, client_state, sparse
        self.ids = draws.rng(seed, "serialization_id", state.step)
        self.layout: Layout = layout(ident.model, DTYPES["bf16" if state.bf16 else "fp16"][0])
        self.config = user_config(ident, state.bf16)
        self.version = ident.versions.deepspeed
        self.tensors = EngineTensors(ident, self.layout, self._groups())

    def files(self) -> dict[str, bytes | Sparse]:
        folder, i = tag(self.state.step), self.ident
        files: dict[str, bytes | Sparse] = {}
        for rank in range(i.world):
            if writes_model_states(i, rank):
                name = model_states(i, rank)
                files[f"{folder}/{name}"] = self._archive(name, self._model_states(rank))
        if writes_optim_states(i, self.state.bf16):
            for rank in range(i.world):
                name = optim_states(i, rank, self.state.bf16)
                files[f"{folder}/{name}"] = self._archive(name, self._optim_states(rank))
            files[RECOVERY] = recovery_script(self.version)
        files[LATEST] = folder.encode()
        return files

    def _archive(self, name: str, obj: dict[str, Any]) -> bytes | Sparse:
        save = torchsave.sparse if self.sparse else torchsave.archive
        return save(name, obj, tensorsave.serialization_id(self.ids), self.ident.versions.torch)

    def _flats(self, sizes: list[int], rank: int) -> list[Tensor]:
        """Flat fp32 tensors of these sizes, where the files hold their tensors."""
        return self.tensors.flats(sizes, rank) if self.sparse else []

    def _groups(self) -> list[list[int]]:
        """The optimizer's two groups: weights decayed, then biases and norms."""
        tensors = self.layout.tensors
        return [[n for n, t in enumerate(tensors) if len(t.shape) > 1],
                [n for n, t in enumerate(tensors) if len(t.shape) <= 1]]

    def _model_states(self, rank: int) -> dict[str, Any]:
        """engine._save_checkpoint's state, in its order, then the client's."""
        i, s, zero = self.ident, self.state, self.ident.parallel.zero
        tensors = self.layout.tensors
        shapes = [{tensors[n].name: tensors[n].shape for n in group} for group in self._groups()]
        zeroed = zero >= 1 or s.bf16
        frozen: dict[str, Any] | None = {} if zero >= 2 else None  # no frozen parameters
        state: dict[str, Any] = {
            "module": self.tensors.module(rank) if self.sparse else {}, "buffer_names": [],
            "optimizer": None if zeroed else self._fp16_optimizer(rank),
            "param_shapes": shapes if zeroed else None, "frozen_param_shapes": frozen,
            "shared_params": self._shared() if zeroed else None, "frozen_param_fragments": frozen,
            "lr_scheduler": self._scheduler(), "data_sampler": None, "random_ltd": None,
            "skipped_steps": s.skipped, "global_steps": s.step,
            "global_samples": s.step * i.hyper.global_batch, "dp_world_size": i.parallel.dp,
            "mp_world_size": i.parallel.tp * i.parallel.pp, "ds_config": self.config,
            "ds_version": self.version}
        return {**state, **self.client_state}

    def _shared(self) -> dict[str, str]:
        """_get_shared_params: a tied output layer is the embedding's parameter."""
        spec = table(self.ident.model)
        return {spec["untied"][0][0]: spec["head"][0][0]} if self.layout.tied else {}

    def _lr(self) -> float:
        return learning_rate(self.ident, self.state.step - self.state.skipped)

    def _scheduler(self) -> dict[str, Any]:
        """The client LambdaLR's state_dict: stepped only by steps that were not skipped."""
        base, lr, stepped = self.ident.hyper.max_lr, self._lr(), self.state.step - self.state.skipped
        return {"base_lrs": [base, base], "last_epoch": stepped, "verbose": False, "_step_count": stepped + 1,
                "_get_lr_called_within_step": False, "_last_lr": [lr, lr], "lr_lambdas": [None, None]}

    def _base_optimizer(self, flats: list[Tensor], rank: int) -> dict[str, Any]:
        """The client AdamW's state_dict over ZeRO's flat partitions (one a
        group): the moments and step counts are tensors, left out unless
        the files hold them (`flats`)."""
        group = {"lr": self._lr(), "betas": BETAS, "eps": EPS, "amsgrad": False, "foreach": None,
                 "maximize": False, "capturable": False, "differentiable": False, "fused": None,
                 "initial_lr": self.ident.hyper.max_lr}
        groups = [{**group, "weight_decay": WEIGHT_DECAY, "params": [0]},
                  {**group, "weight_decay": 0.0, "params": [1]}]
        return {"state": self.tensors.adam(flats, rank), "param_groups": groups}

    def _fp16_optimizer(self, rank: int) -> dict[str, Any]:
        """fp16 without ZeRO: FP16_Optimizer's state_dict (fp16/fused_optimizer.py),
        saved in the model states."""
        scaler = self.state.scaler or LossScaler()
        flats = self.tensors.whole_groups(rank) if self.sparse else []
        return {"dynamic_loss_scale": True, "cur_scale": scaler.scale, "cur_iter": scaler.iteration,
                "last_overflow_iter": scaler.last_overflow, "scale_factor": 2.0,
                "scale_window": scaler.window,
                "optimizer_state_dict": self._base_optimizer(flats, rank), "fp32_groups_flat": flats,
                "clip_grad": CLIP}

    def _optim_states(self, rank: int) -> dict[str, Any]:
        """_save_zero_checkpoint's dict around the optimizer's state_dict:
        ZeRO-3's, ZeRO-1/2's, or (bf16 without ZeRO) BF16_Optimizer's."""
        dp, zero = self.ident.parallel.dp, self.ident.parallel.zero
        scaled = {"dynamic_loss_scale": not self.state.bf16, "overflow": self.state.overflow}
        padding = self.tensors.paddings(ranks_of(self.ident, rank)[1] == dp - 1)
        flats = self._flats(self.tensors.partitions(), rank)
        lean = self._flats([n - pad for n, pad in zip(self.tensors.partitions(), padding, strict=True)], rank)
        partitioned = {"clip_grad": CLIP, "base_optimizer_state": self._base_optimizer(flats, rank),
                       "single_partition_of_fp32_groups": lean}
        paddings = {"group_paddings": padding, "partition_count": [dp, dp], "ds_version": self.version}
        if zero >= 3:  # stage3.py _rigid_state_dict
            sd = {"zero_stage": 3, **scaled, "partition_count": dp,
                  "optimizer_state_dict": self._base_optimizer(flats, rank), "fp32_flat_groups": flats}
        elif zero >= 1:  # stage_1_and_2.py state_dict
            sd = {**scaled, **partitioned, "zero_stage": zero, **paddings}
        else:  # bf16_optimizer.py state_dict
            sd = {**partitioned, **paddings}
        return {"optimizer_state_dict": sd, "ds_config": self.config, "ds_version": self.version}


class DeepSpeedWriter:
    """An event sink writing each Checkpoint event as save_checkpoint(output_dir),
    and the Export as save_16bit_model(output_dir)."""

    def __init__(self, saving: Saving) -> None:
        self.saving = saving
        self.scaler: LossScaler | None = None

    def event(self, e: ev.Event) -> None:
        ident = self.saving.ident
        if isinstance(e, ev.Step):
            if self.scaler is None:  # a resumed run's engine loaded its scaler
                self.scaler = restored(ident, e.step - 1)
            self.scaler.step(ident, e.step, e.overflow)
        elif isinstance(e, ev.Checkpoint):
            self._save(e)
        elif isinstance(e, ev.Restart):  # a new engine, restored from the checkpoint at its first step
            self.scaler = None
        elif isinstance(e, ev.Export):  # save_16bit_model(output_dir), rank 0's one file
            exported = exported_file(ident, self.saving.seed, sparse=self.saving.sparse)
            write_file(self.saving.root / EXPORT, exported, mtime=e.time)

    def _save(self, e: ev.Checkpoint) -> None:
        ident, root = self.saving.ident, self.saving.root
        state = EngineState(e.step, replace(self.scaler) if self.scaler else restored(ident, e.step))
        client = {"checkpoint_step": e.step,
                  "args": {"model": ident.model.name, "seed": self.saving.seed}}
        files = saved_files(ident, state, self.saving.seed, client, self.saving.sparse)
        folder = tag(e.step)
        inside = {name.removeprefix(f"{folder}/"): data for name, data in files.items()
                  if name.startswith(f"{folder}/")}
        write(root / folder, inside, mtime=e.time, last=model_states(ident, 0))
        if RECOVERY in files:
            write_file(root / RECOVERY, files[RECOVERY], mtime=e.time)
            mark_executable(root / RECOVERY)
        write_file(root / LATEST, files[LATEST], mtime=e.time)  # last: it names a complete tag

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """What a checkpoint keeps of the run's logs: DeepSpeed keeps none."""
        return ()
