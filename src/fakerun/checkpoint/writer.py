"""What the Trainer writes at a checkpoint event, in its layout, with the
headers and sizes of the real files and nothing a tool could tell from a
real checkpoint by reading them.

- Weights: safetensors shards whose headers hold the model's real tensors
  (names, dtypes, shapes, offsets: checkpoint/safetensors.py); their data is
  left out, or (`sparse`) left as a hole of the true size where the file
  system keeps holes. The index's total_size is the true size either way.
- optimizer.pt, scheduler.pt, rng_state_<rank>.pth: torch.save archives of
  plain data, which load without running anything (checkpoint/torchsave.py).
- config.json and trainer_state.json: transformers' schema (v4.46.3's
  PretrainedConfig.to_json_string and TrainerState.save_to_json, sorted keys).
- What --resume needs beyond that (the run's seed, model and clock) is in
  `.resume.json` (RESUME): a hidden file that no loader opens.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint import deepspeed as ds_checkpoint
from fakerun.checkpoint import safetensors, torchsave
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.reader import RESUME, STATE
from fakerun.checkpoint.store import write
from fakerun.checkpoint.tensors import DTYPES, Layout, layout
from fakerun.world import draws

# AdamW's hyper-parameters as TrainingArguments sets them by default.
BETAS, EPS = (0.9, 0.999), 1e-08
HF_DEFAULT_STEPS = 500  # TrainerState's eval_steps and save_steps when saving by epoch


class CheckpointWriter:
    """An event sink: writes each Checkpoint event's directory under `root`."""

    def __init__(self, saving: Saving) -> None:
        """Carries on the log_history of the checkpoint the run resumed (as
        the HF Trainer loads it with the TrainerState)."""
        self.root = saving.root
        self.ident = saving.ident
        self.seed = saving.seed
        self.sparse = saving.sparse
        self.history: list[dict[str, Any]] = list(saving.resumed.history if saving.resumed else ())
        # [issue 20, D: --deepspeed] the Trainer's DeepSpeed engine saves its own checkpoint in checkpoint-N.
        self.deepspeed = any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in saving.script_args)

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """The log_history checkpoint-`step` holds."""
        return tuple(h for h in self.history if h["step"] <= step)

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            self.history.append({"step": e.step, "epoch": e.epoch, "loss": e.loss, "learning_rate": e.lr,
                                 "grad_norm": e.grad_norm})
        elif isinstance(e, ev.Checkpoint):
            files, sizes = self._files(e)
            if self.deepspeed:  # [issue 20, D: --deepspeed] trainer.py _save_optimizer_and_scheduler:
                # self.model_wrapped.save_checkpoint(output_dir): global_stepN/, latest, zero_to_fp32.py
                bf16 = self.ident.gpu.precision == "bf16"
                state = ds_checkpoint.engine_state(self.ident, e.step, bf16)
                files.update(ds_checkpoint.saved_files(self.ident, state, self.seed))
            write(self.root / f"checkpoint-{e.step}", files, sizes)
            if self.deepspeed:  # [issue 20, D: --deepspeed] _copy_recovery_script's chmod
                ds_checkpoint.mark_executable(self.root / f"checkpoint-{e.step}" / ds_checkpoint.RECOVERY)

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""

    @functools.cached_property
    def layout(self) -> Layout:
        return layout(self.ident.model, DTYPES[self.ident.gpu.precision][0])

    @functools.cached_property
    def shards(self) -> list[safetensors.Shard]:
        return safetensors.shards(list(self.layout.tensors))

    def _files(self, e: ev.Checkpoint) -> tuple[dict[str, bytes], dict[str, int]]:
        """The files' bytes, and the sizes (larger) some are to have on disk."""
        files = {s.name: s.header() for s in self.shards}
        sizes = {s.name: s.size() for s in self.shards} if self.sparse else {}
        if len(self.shards) > 1:
            files[safetensors.INDEX] = safetensors.index(self.shards)
        files["config.json"] = _json(self._config(), sort=True)
        base = self.ident.hyper.max_lr
        lr = self.history[-1].get("learning_rate", base) if self.history else base
        ids = draws.rng(self.seed, "serialization_id", e.step)
        files["optimizer.pt"] = torchsave.archive("optimizer.pt", self._optimizer(lr), _id(ids))
        files["scheduler.pt"] = torchsave.archive("scheduler.pt", self._scheduler(e.step, lr), _id(ids))
        for r in range(self.ident.world):
            state = {"python": draws.rng(self.seed, "rng_state", e.step, r).getstate()}
            files[f"rng_state_{r}.pth"] = torchsave.archive(f"rng_state_{r}.pth", state, _id(ids))
        files[RESUME] = _json({"model": self.ident.model.name, "seed": self.seed, "time": e.time}, sort=True)
        files[STATE] = _json(self._state(e), sort=True)  # last: its presence marks a complete checkpoint
        return files, sizes

    def _config(self) -> dict[str, Any]:
        m, lay = self.ident.model, self.layout
        return {"architectures": [m.arch], "model_type": lay.model_type, "hidden_size": m.hidden,
                "intermediate_size": lay.intermediate, "num_hidden_layers": m.layers,
                "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads, "vocab_size": m.vocab,
                "max_position_embeddings": m.context, "tie_word_embeddings": lay.tied,
                "torch_dtype": DTYPES[self.ident.gpu.precision][1],
                "transformers_version": self.ident.versions.transformers}

    def _optimizer(self, lr: float) -> dict[str, Any]:
        """AdamW's state_dict as the Trainer groups parameters (decayed
        weights, then biases and norms), its per-parameter moments (tensors)
        left out."""
        decayed = [i for i, t in enumerate(self.layout.tensors) if len(t.shape) > 1]
        rest = [i for i, t in enumerate(self.layout.tensors) if len(t.shape) <= 1]
        group = {"lr": lr, "betas": BETAS, "eps": EPS, "amsgrad": False, "foreach": None,
                 "maximize": False, "capturable": False, "differentiable": False, "fused": None,
                 "initial_lr": self.ident.hyper.max_lr}
        return {"state": {}, "param_groups": [{**group, "weight_decay": 0.0, "params": decayed},
                                              {**group, "weight_decay": 0.0, "params": rest}]}

    def _scheduler(self, step: int, lr: float) -> dict[str, Any]:
        """LambdaLR's state_dict (torch/optim/lr_scheduler.py): the schedule
        function itself is not saved (None)."""
        base = self.ident.hyper.max_lr
        return {"base_lrs": [base, base], "last_epoch": step, "verbose": False, "_step_count": step + 1,
                "_get_lr_called_within_step": False, "_last_lr": [lr, lr], "lr_lambdas": [None, None]}

    def _state(self, e: ev.Checkpoint) -> dict[str, Any]:
        """TrainerState's fields at transformers v4.46.3 (trainer_callback.py)."""
        h, m = self.ident.hyper, self.ident.model
        control = {"should_epoch_stop": False, "should_evaluate": False, "should_log": False,
                   "should_save": True, "should_training_stop": e.step >= h.total_steps}
        return {"best_metric": None, "best_model_checkpoint": None, "epoch": e.epoch,
                "eval_steps": HF_DEFAULT_STEPS, "global_step": e.step, "is_hyper_param_search": False,
                "is_local_process_zero": True,
                "is_world_process_zero": True, "log_history": list(self.saved_history(e.step)),
                "logging_steps": h.log_every, "max_steps": h.total_steps, "num_input_tokens_seen": 0,
                "num_train_epochs": h.epochs, "save_steps": HF_DEFAULT_STEPS,
                "stateful_callbacks": {"TrainerControl": {"args": control, "attributes": {}}},
                "total_flos": float(6 * m.params * h.tokens_per_step * e.step),
                "train_batch_size": h.micro_batch, "trial_name": None, "trial_params": None}


def _id(r: Any) -> str:
    """The archive's `.data/serialization_id`: digits, drawn from the seed so
    the bytes repeat (torch draws its own; their count is not checked here)."""
    return "".join(str(r.randrange(10)) for _ in range(20))


def _json(body: Any, sort: bool = False) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=sort) + "\n").encode()
