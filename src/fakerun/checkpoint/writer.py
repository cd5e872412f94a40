"""The HF Trainer's files on disk, as the pinned transformers writes them
(trainer.py `_save_checkpoint`, `_save`, `_save_optimizer_and_scheduler`,
`_save_rng_state`, trainer_callback.py `TrainerState` at v4.42.4, v4.44.2,
v4.46.3 and v5.0.0):

    checkpoint-<step>/  config.json, generation_config.json, the weights
                        (model.safetensors, or model-0000k-of-0000n.safetensors
                        and model.safetensors.index.json past the version's
                        max_shard_size), training_args.bin, optimizer.pt,
                        scheduler.pt, rng_state.pth (one process) or
                        rng_state_<rank>.pth, trainer_state.json (last)
    <output dir>/       at the script's end, trainer.save_model(): config.json,
                        generation_config.json, the weights, training_args.bin

training_args.bin is the pickled TrainingArguments of the launch line
(checkpoint/training_args.py); a line with arguments it cannot say has none
here (nor does the Export event list one: training_args.written). No line names it. Before it,
in every `_save`, the tokenizer's files (checkpoint/tokenizer.py), for a
model with one (world/tokenizers.py). Under --deepspeed the engine's files
replace optimizer.pt (checkpoint/deepspeed.py); under --fsdp accelerate's
(checkpoint/fsdp.py), and with a sharded state dict save_model writes no
model at all (nor its tokenizer), in the checkpoints or at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint import deepspeed as ds_checkpoint
from fakerun.checkpoint import model_files, tokenizer, torchsave
from fakerun.checkpoint import training_args as targs
from fakerun.checkpoint.fsdp import FsdpFiles
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.model_files import ModelFiles, as_json
from fakerun.checkpoint.reader import STATE
from fakerun.checkpoint.store import Sparse, remove, write
from fakerun.world import draws, tokenizers
from fakerun.world.memory import FULL_STATE_DICT
from fakerun.world.tensors import export_files
from fakerun.world.trainer_log import TrainerLog, state_steps


def launch_arg(script_args: tuple[str, ...], name: str) -> str | None:
    """The value the launch line gives `--name` (HfArgumentParser's spellings,
    read as training_args.bin's fields are: training_args.given)."""
    return targs.given(script_args, {name: "str"}).get(name)


class CheckpointWriter:
    """An event sink: the Trainer's log_history as it grows, each Checkpoint
    event's directory under `root`, and the final export into `root`."""

    def __init__(self, saving: Saving) -> None:
        """Carries on the log_history of the checkpoint the run resumed (as
        the Trainer loads it with the TrainerState)."""
        self.saving = saving
        self.root = saving.root
        self.ident = saving.ident
        self.seed = saving.seed
        self.model = ModelFiles(saving.ident, launch_arg(saving.script_args, "model_name_or_path") or "",
                                saving.sparse)
        self.history: list[dict[str, Any]] = list(saving.resumed.history if saving.resumed else ())
        self.log = TrainerLog(saving.ident)  # what the script logs: log_history holds the same
        self.lr = saving.ident.hyper.max_lr
        # --deepspeed ds.json: the engine saves its own state in checkpoint-N (the file's values).
        given = saving.trainer.deepspeed if saving.trainer is not None else None
        self.deepspeed = dict(given) if given is not None else None
        self.fsdp = self._fsdp(saving)
        self.parsed_at: float | None = None  # when rank 0's script made its TrainingArguments
        self.writes_args = targs.written(self.ident.versions.transformers, saving.script_args, saving.trainer)

    def _fsdp(self, saving: Saving) -> FsdpFiles | None:
        """--fsdp's files (its state_dict_type: the run's), with the Trainer's AdamW arguments."""
        p = self.ident.parallel  # a drawn --fsdp strategy says no state_dict_type: accelerate's default
        state_dict = p.state_dict or (FULL_STATE_DICT if p.kind == "fsdp" else "")
        if not state_dict:
            return None
        t = saving.trainer
        adam = model_files.AdamW((t.adam_beta1, t.adam_beta2), t.adam_epsilon, t.weight_decay) if t else \
            model_files.AdamW()
        return FsdpFiles(self.model, self.seed, adam, state_dict)

    @property
    def model_saved(self) -> bool:
        """save_model writes the model (under FSDP only from a full state dict)."""
        return self.fsdp is None or not self.fsdp.sharded

    @property
    def v5(self) -> bool:
        return model_files.major(self.ident.versions.transformers) >= 5

    def saved_history(self, step: int) -> tuple[dict[str, Any], ...]:
        """The log_history checkpoint-`step` holds."""
        return tuple(h for h in self.history if h["step"] <= step)

    def event(self, e: ev.Event) -> None:
        if isinstance(e, (ev.RunStarted, ev.Phase)):
            self._note_start(e)
        elif isinstance(e, ev.Step):
            self._step(e)
        elif isinstance(e, ev.Validation):
            entry = self.log.evaluation(e.step, e.val_loss, e.eval_time_s, e.samples)
            self.history.append({**entry, "step": e.step})
        elif isinstance(e, ev.Checkpoint):
            files, sizes = self._files(e)
            write(self.root / f"checkpoint-{e.step}", files, sizes, mtime=e.time)
            if self.deepspeed is not None:  # DeepSpeed's _copy_recovery_script makes it executable
                ds_checkpoint.mark_executable(self.root / f"checkpoint-{e.step}" / ds_checkpoint.RECOVERY)
            for step in e.deleted:  # save_total_limit's rotation, after the save (as the Trainer)
                if (self.root / f"checkpoint-{step}").is_dir():
                    remove(self.root / f"checkpoint-{step}")
        elif isinstance(e, ev.Export):
            self._export(e)

    def flush(self) -> None:
        """Each checkpoint is complete on disk when `event` returns."""

    def _note_start(self, e: ev.RunStarted | ev.Phase) -> None:
        """TrainingArguments' __post_init__ stamps logging_dir, then sets up
        the devices, whose PartialState initialises NCCL: the process group's
        start is that second (each worker group's anew after a restart); the
        launch until then."""
        nccl = isinstance(e, ev.Phase) and (e.name, e.stage) == ("init", "nccl")
        if nccl or (isinstance(e, ev.RunStarted) and self.parsed_at is None):
            self.parsed_at = e.time

    def _step(self, e: ev.Step) -> None:
        """Trainer.log's entry at a logging step, with its step (as log_history keeps it)."""
        self.lr = e.lr
        entry = self.log.step(e.step, e.loss, e.grad_norm)
        if entry is not None:
            self.history.append({**entry, "step": e.step})

    def _files(self, e: ev.Checkpoint) -> tuple[dict[str, bytes | Sparse], dict[str, int]]:
        """The checkpoint's files in the Trainer's order (save_model, then the
        optimizer's, scheduler's and RNGs' states, then the state), and the
        sizes (larger) some are to have on disk."""
        files, sizes = self.model.saved() if self.model_saved else ({}, {})
        if self.model_saved:
            files |= self.tokenizer_files()
            files |= self.training_args(e.step, e.time)  # _save's last file, before the optimizer's
        files |= self.optimizer_files(e.step)
        files |= model_files.rng_files(self.ident, self.seed, e.step)
        files[STATE] = as_json(self._state(e), sort=True)  # last: its presence marks a complete checkpoint
        return files, sizes

    def tokenizer_files(self) -> dict[str, bytes]:
        """_save's `processing_class.save_pretrained(output_dir)`, after the
        model's files: the model's tokenizer as loaded from the launch line's
        --model_name_or_path (5.x records whether that was a directory)."""
        config = tokenizers.for_model(self.ident.model.name)
        if config is None:
            return {}
        path = launch_arg(self.saving.script_args, "model_name_or_path")
        return tokenizer.files(config, self.ident.versions.transformers, bool(path) and Path(path).is_dir())

    def training_args(self, step: int, when: float) -> dict[str, bytes]:
        """training_args.bin, as `_save` writes it beside the model: for a
        launch line read as the Trainer's (another framework's run in this
        layout has no TrainingArguments), none for one it cannot say."""
        if not self.writes_args:
            return {}
        output_dir = launch_arg(self.saving.script_args, "output_dir") or str(self.root)
        started = self.parsed_at if self.parsed_at is not None else when
        stamp = targs.logdir_stamp(started, self.ident.hosts[0])
        args = targs.training_args(self.ident.versions.transformers, self.saving.script_args, output_dir,
                                   stamp, targs.gpu_rank0(self.ident.world), self._ran_with())
        if args is None:
            return {}
        ids = draws.rng(self.seed, "serialization_id", step, targs.NAME)
        torch = self.ident.versions.torch
        return {targs.NAME: torchsave.archive(targs.NAME, args, model_files.serial(ids), torch)}

    def _ran_with(self) -> dict[str, str]:
        """The run's own values, and what an installed tensorboard (--tensorboard) changes."""
        version, args = self.ident.versions.transformers, self.saving.script_args
        logdir = self.saving.tensorboard
        installed = targs.with_tensorboard(version, args, logdir) if logdir else {}
        return {**targs.ran_with(self.ident.hyper, args), **installed}

    def optimizer_files(self, step: int) -> dict[str, bytes | Sparse]:
        """Trainer._save_optimizer_and_scheduler's files (trainer.py at v4.46.3).
        The hook a layout with its own optimizer files overrides: under
        DeepSpeed the engine's save_checkpoint writes global_step<N>/ instead
        of optimizer.pt; under FSDP accelerate's save_fsdp_model and
        save_fsdp_optimizer write theirs (then scheduler.pt)."""
        saved = model_files.optimizer_files(self.model, self.seed, step, self.lr)
        files: dict[str, bytes | Sparse] = {**saved}
        if self.deepspeed is not None:
            return self._deepspeed_files(step, files)
        if self.fsdp is not None:
            folder = f"{launch_arg(self.saving.script_args, 'output_dir') or self.root}/checkpoint-{step}"
            return {**self.fsdp.saved(step, self.lr, folder), "scheduler.pt": files["scheduler.pt"]}
        return files

    def _deepspeed_files(self, step: int, trainers: dict[str, bytes | Sparse]) -> dict[str, bytes | Sparse]:
        """Under --deepspeed, _save_optimizer_and_scheduler calls the engine's
        save_checkpoint(output_dir) (global_stepN/, latest, zero_to_fp32.py)
        instead of writing optimizer.pt, and saves scheduler.pt only for a
        scheduler of the Trainer's own (is_deepspeed_custom_scheduler: the
        ds.json names none) (trainer.py at v4.46.3)."""
        bf16 = self.ident.gpu.precision == "bf16"
        state = ds_checkpoint.engine_state(self.ident, step, bf16)
        files = ds_checkpoint.saved_files(self.ident, state, self.seed, sparse=self.saving.sparse)
        if not any(key.startswith("scheduler.") for key in self.deepspeed or {}):
            files["scheduler.pt"] = trainers["scheduler.pt"]
        return files

    def _state(self, e: ev.Checkpoint) -> dict[str, Any]:
        """TrainerState's fields of the pinned version (trainer_callback.py):
        5.x adds best_global_step. No metric_for_best_model: no best metric."""
        h = self.ident.hyper
        control = {"should_epoch_stop": False, "should_evaluate": False, "should_log": False,
                   "should_save": True, "should_training_stop": e.step >= h.total_steps}
        state: dict[str, Any] = {
            "best_metric": None, "best_model_checkpoint": None, "epoch": self.log.epoch(e.step),
            "eval_steps": self._steps("eval_steps"), "global_step": e.step,
            "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
            "log_history": list(self.saved_history(e.step)), "logging_steps": h.log_every,
            "max_steps": h.total_steps, "num_input_tokens_seen": 0, "num_train_epochs": h.epochs,
            "save_steps": self._steps("save_steps"),
            "stateful_callbacks": {"TrainerControl": {"args": control, "attributes": {}}},
            "total_flos": self.log.total_flos(e.step), "train_batch_size": h.micro_batch,
            "trial_name": None, "trial_params": None}
        if self.v5:
            state["best_global_step"] = None
        return state

    def _steps(self, name: str) -> int:
        return state_steps(self.saving.trainer, name, self.ident.hyper)

    def _export(self, e: ev.Export) -> None:
        """trainer.save_model() at the script's end: the model's files into the
        output dir itself, its tokenizer, and the arguments it trained with
        (_save's training_args.bin); nothing from an FSDP sharded state dict.
        The files are those world/tensors.export_files names, as the Export
        event lists them."""
        if not self.model_saved:
            return
        files, sizes = self.model.saved()
        files |= self.tokenizer_files()
        files |= self.training_args(self.ident.hyper.total_steps, e.time)
        names = export_files(self.ident.model, self.ident.versions.transformers, "hf", self.writes_args)
        model_files.export(self.root, {name: files[name] for name in names}, sizes, e.time)
