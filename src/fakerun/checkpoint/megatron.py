"""What Megatron-LM writes at a save, in the pinned megatron-core version's
layout (NVIDIA/Megatron-LM at core_v0.8.0, core_v0.9.0, core_v0.10.0,
core_v0.15.0: megatron/training/checkpointing.py save_checkpoint,
megatron/core/dist_checkpointing/serialization.py save), under --save:

    <save>/iter_0000004/                    get_checkpoint_name: 'iter_{:07d}'
    <save>/latest_checkpointed_iteration.txt  the iteration, no newline, by
                                              rank 0 after every rank saved

The iteration's directory, by format (world/megatron.py checkpoint_format):
- torch_dist (the default from core 0.9): `common.pt` (rank 0's
  TorchCommonSaveStrategy.save_common: the state dict's non-sharded part),
  per rank `__<rank>_0.distcp` and `__<rank>_1.distcp` (torch.distributed.
  checkpoint's FileSystemWriter under Megatron's FileSystemWriterAsync, two
  threads: the prefix `__<rank>_`, one file per non-empty bucket), the
  coordinator's `.metadata` (checkpoint/distcp.py), and `metadata.json`
  written last (save_config of CheckpointingConfig, after every shard).
  With --ckpt-fully-parallel-save (the default) every data-parallel rank
  writes its share of its model-parallel group's tensors.
- torch (the legacy one, 0.8's default): per (tensor, pipeline) rank
  `mp_rank_<tp:02d>/` (`mp_rank_<tp:02d>_<pp:03d>/` with pipeline
  parallelism), written by its data-parallel rank 0: `model_optim_rng.pt`,
  and `distrib_optim.pt` with --use-distributed-optimizer.

Tensors' bytes: the .distcp files are their true size, left a hole where
the file system keeps holes (`sparse`), else their data is left out; the
torch.save archives (common.pt, model_optim_rng.pt, distrib_optim.pt) hold
their plain data and the args namespace (an argparse.Namespace, as the real
file pickles it), tensors left out (checkpoint/torchsave.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint import distcp, torchsave
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.megatron_state import megatron_tensors
from fakerun.checkpoint.store import write, write_file
from fakerun.checkpoint.tensorsave import serialization_id
from fakerun.world import draws
from fakerun.world.megatron import TRACKER, checkpoint_format, iteration_dir, launch_args
from fakerun.world.memory import stage_params

CONFIG = "metadata.json"  # dist_checkpointing/core.py CONFIG_FNAME
COMMON = "common.pt"  # dist_checkpointing/strategies/common.py COMMON_STATE_FNAME
CHECKPOINT_VERSION = 3.0
BUCKETS = 2  # TorchDistSaveShardedStrategy's thread_count
SEED = 1234  # Megatron's --seed default
# Adam as Megatron's get_megatron_optimizer sets it by default (arguments.py):
# betas (0.9, 0.999), eps 1e-08, weight decay 0.01; its param groups, with
# and without weight decay (biases and norms), as get_param_groups makes them.
ADAM = {"betas": (0.9, 0.999), "eps": 1e-08, "bias_correction": True}
WEIGHT_DECAY = 0.01


class MegatronWriter:
    """An event sink: writes each Checkpoint event's iteration directory, then
    the tracker file naming it."""

    def __init__(self, saving: Saving) -> None:
        self.root = saving.root
        self.ident = saving.ident
        self.seed = saving.seed
        self.sparse = saving.sparse
        self.given = launch_args(saving.script_args)
        self.fmt = checkpoint_format(self.ident.versions.megatron, self.given, self.ident.parallel.zero >= 1)
        self.lr = self.ident.hyper.max_lr

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            self.lr = e.lr
        elif isinstance(e, ev.Checkpoint):
            files, sizes = self.files(e.step)
            last = CONFIG if self.fmt.dist else ""
            write(self.root / iteration_dir(e.step), files, sizes, mtime=e.time, last=last)
            write_file(self.root / TRACKER, str(e.step).encode(), mtime=e.time)

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """A Megatron checkpoint keeps no log history (the job's restart reads it of the Trainer's)."""
        return ()

    def files(self, step: int) -> tuple[dict[str, bytes], dict[str, int]]:
        """The iteration directory's files (names relative to it), and the
        sizes (larger) some are to have on disk."""
        return self._dist(step) if self.fmt.dist else (self._legacy(step), {})

    # -- torch_dist -----------------------------------------------------------
    def _dist(self, step: int) -> tuple[dict[str, bytes], dict[str, int]]:
        i = self.ident
        minor = int(i.versions.megatron.split(".")[1])
        state = megatron_tensors(i, self.fmt, minor)
        plan = distcp.plan(state, i.world, BUCKETS, i.versions.torch)
        files = {COMMON: self._archive(COMMON, self._common(step), step)}
        files.update({name: b"" for name in plan.files})  # their data left out
        files[distcp.METADATA] = plan.metadata()
        # serialization.save's metadata_finalize_fn: rank 0, after the shards.
        files[CONFIG] = json.dumps({"sharded_backend": self.fmt.name, "sharded_backend_version": 1,
                                    "common_backend": "torch", "common_backend_version": 1}).encode()
        return files, dict(plan.files) if self.sparse else {}

    def _common(self, step: int) -> dict[str, Any]:
        """generate_state_dict less what dist_checkpointing shards: args, the
        checkpoint version, the iteration, the optimizer's param groups and
        the scheduler's state (rng and rerun state are sharded objects)."""
        common: dict[str, Any] = {"args": self._args(step), "checkpoint_version": CHECKPOINT_VERSION,
                                  "iteration": step}
        if self.fmt.save_optim:
            groups = {"optimizer": {"param_groups": self._param_groups()}}
            if self.fmt.distributed_optimizer:
                groups["param_state_sharding_type"] = self.fmt.sharding  # type: ignore[assignment]
            common["optimizer"] = groups
            common["opt_param_scheduler"] = self._scheduler(step)
        common["num_floating_point_operations_so_far"] = self._flops(step)
        return common

    # -- torch (legacy) ---------------------------------------------------------
    def _legacy(self, step: int) -> dict[str, bytes]:
        """One model_optim_rng.pt per (tensor, pipeline) rank (and the
        distributed optimizer's distrib_optim.pt beside it)."""
        p = self.ident.parallel
        files = {}
        for stage in range(p.pp):
            for t in range(p.tp):
                folder = f"mp_rank_{t:02d}" if p.pp == 1 else f"mp_rank_{t:02d}_{stage:03d}"
                state: dict[str, Any] = {"args": self._args(step), "checkpoint_version": CHECKPOINT_VERSION,
                                         "iteration": step, "model": {}}
                if self.fmt.save_optim:
                    state["optimizer"] = {"optimizer": {"param_groups": self._param_groups()}}
                    state["opt_param_scheduler"] = self._scheduler(step)
                if self.fmt.save_rng:
                    state["rng_state"] = [self._rng(step, stage, t)]
                state["num_floating_point_operations_so_far"] = self._flops(step)
                files[f"{folder}/model_optim_rng.pt"] = self._archive("model_optim_rng.pt", state, step)
                if self.fmt.distributed_optimizer and self.fmt.save_optim:
                    # save_parameter_state: per buffer, the buckets' param, exp_avg,
                    # exp_avg_sq (tensors: left out), and the buffers' sizes.
                    optim = {"buckets_coalesced": True, "per_bucket_numel": [[int(stage_params(
                        self.ident.model, p, stage))]]}
                    files[f"{folder}/distrib_optim.pt"] = self._archive("distrib_optim.pt", optim, step)
        return files

    # -- what both formats hold ---------------------------------------------------
    def _args(self, step: int) -> argparse.Namespace:
        """The launch line's flags as the parsed args, with what
        check_checkpoint_args compares on load and the consumption so far."""
        i, p, h, m = self.ident, self.ident.parallel, self.ident.hyper, self.ident.model
        return argparse.Namespace(**{
            **self.given, "num_layers": m.layers, "hidden_size": m.hidden, "num_attention_heads": m.heads,
            "seq_length": h.seq_len, "max_position_embeddings": h.seq_len, "micro_batch_size": h.micro_batch,
            "global_batch_size": h.global_batch, "train_iters": h.total_steps, "lr": h.max_lr,
            "min_lr": h.min_lr, "lr_decay_style": h.decay, "lr_warmup_iters": h.warmup_steps,
            "tensor_model_parallel_size": p.tp, "pipeline_model_parallel_size": p.pp,
            "data_parallel_size": p.dp, "world_size": i.world,
            "use_distributed_optimizer": self.fmt.distributed_optimizer,
            "bf16": i.gpu.bf16, "fp16": not i.gpu.bf16, "seed": self.given.get("seed", SEED),
            "iteration": step, "consumed_train_samples": step * h.global_batch, "consumed_valid_samples": 0,
            "use_dist_ckpt": self.fmt.dist, "save": str(self.root)})

    def _param_groups(self) -> list[dict[str, Any]]:
        h = self.ident.hyper
        group = {"lr": self.lr, **ADAM, "max_lr": h.max_lr, "min_lr": h.min_lr, "is_expert_parallel": False,
                 "is_decoupled_lr": False, "lr_mult": 1.0}
        return [{**group, "weight_decay": WEIGHT_DECAY, "wd_mult": 1.0},
                {**group, "weight_decay": 0.0, "wd_mult": 0.0}]

    def _scheduler(self, step: int) -> dict[str, Any]:
        """OptimizerParamScheduler.state_dict: its steps count samples."""
        h = self.ident.hyper
        return {"max_lr": h.max_lr, "lr_warmup_steps": h.warmup_steps * h.global_batch,
                "num_steps": step * h.global_batch, "lr_decay_style": h.decay,
                "lr_decay_steps": (h.decay_steps or h.total_steps) * h.global_batch, "min_lr": h.min_lr,
                "start_wd": WEIGHT_DECAY, "end_wd": WEIGHT_DECAY, "wd_incr_style": "constant",
                "wd_incr_steps": h.total_steps * h.global_batch}

    def _rng(self, step: int, stage: int, t: int) -> dict[str, Any]:
        """get_rng_state's Python part (the torch and CUDA states are tensors: left out)."""
        return {"random_rng_state": draws.rng(self.seed, "megatron-rng", step, stage, t).getstate()}

    def _flops(self, step: int) -> float:
        """num_floating_point_operations_so_far: 6 N T per token trained."""
        return float(6 * self.ident.model.params * self.ident.hyper.tokens_per_step * step)

    def _archive(self, name: str, obj: Any, step: int) -> bytes:
        drawn = draws.rng(self.seed, "serialization_id", step, name)
        return torchsave.archive(name, obj, serialization_id(drawn), self.ident.versions.torch)
