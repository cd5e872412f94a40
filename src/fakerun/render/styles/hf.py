"""`--style hf`: what a script built on the transformers Trainer prints, as
the pinned transformers version prints it: huggingface/transformers v4.46.3
(and v4.42.4, v4.44.2, v5.0.0) src/transformers/trainer.py (the Trainer's
log lines), src/transformers/trainer_callback.py (ProgressCallback: the tqdm
bar and `training_bar.write(str(logs))`, on world process zero only) and
src/transformers/utils/logging.py (the library's StreamHandler on stderr).

Only global rank 0 logs (the Trainer's "world process zero"). The Trainer's
logger (INFO, no formatter) and the tqdm bar write to stderr; the log dicts
go through `tqdm.write`, to stdout, which blanks the bar first and redraws it
after. The bar redraws on tqdm's own clock (render/styles/tqdm.py's Bar, fed
the step events' simulated times): `\r` and the bar, no newline, so the
Trainer's next logger line follows it on the same line, as in real logs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from pathlib import PurePosixPath
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.lines import STDERR, Line
from fakerun.render.styles.hf_progress import ProgressCallback
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world import tokenizers
from fakerun.world.identity import ENV_PREFIX
from fakerun.world.memory import SHARDED_STATE_DICT
from fakerun.world.tensors import max_shard
from fakerun.world.trainer_log import TrainerLog

DEFAULT_OUTPUT = "trainer_output"  # TrainingArguments.output_dir's default
EXPORT_DEFAULT = "./models/"  # an export's path where no --output-dir was given (coordinator/timeline.py)


class HfLines(EventRoutes):
    # The example scripts' first collective is TrainingArguments.main_process_first's
    # barrier (PartialState.wait_for_everyone, no device_ids) around the dataset
    # map, and neither they nor the Trainer destroy the process group.
    barrier_first = True
    leaves_process_group = True

    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self._log: TrainerLog | None = None
        self.progress = ProgressCallback()
        self.eval_start = 0.0  # when the evaluation loop began
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Export: self._export, ev.Summary: self._summary,
        }
        self.export: list[str] = []  # save_model's lines, printed after the summary

    @property
    def v5(self) -> bool:
        return self.ident is not None and int(self.ident.versions.transformers.split(".")[0]) >= 5

    def lines(self, event: ev.Event) -> list[Line]:
        return self.routed(event) or []

    def banner(self, when: float) -> list[Line]:
        """The Trainer has none: its first words are the training block. A
        deprecated argument warns first, on every rank, as its arguments are
        parsed (data/style-hf.toml [deprecated])."""
        if self.ident is None:
            return []
        i, args = self.ident, [a.split("=")[0] for a in (self.launch.args if self.launch else [])]
        site = f"{ENV_PREFIX}/lib/python{i.versions.python}/site-packages"
        warned = [said["text"].format(site=site, line=said[i.versions.transformers]).split("\n")
                  for flag, said in texts.load("style-hf")["deprecated"].items()
                  if f"--{flag}" in args and i.versions.transformers in said]
        return [Line(text, STDERR, rank) for rank in range(i.world) for lines in warned for text in lines]

    # -- the Trainer's log dicts ---------------------------------------------
    def logs(self, values: dict[str, float | int]) -> str:
        """str(dict) as the pinned version prints it: 4.x raw floats (rounded
        where the Trainer rounds them), 5.x every float as f"{v:.4g}", quoted."""
        if self.v5:
            values = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()}
        return str(values)

    @property
    def trainer_log(self) -> TrainerLog:
        """What the Trainer logs (world/trainer_log.py: trainer_state.json keeps the same)."""
        if self._log is None:
            self._log = TrainerLog(self.ident)
        return self._log

    def shown(self, entry: dict[str, Any]) -> str:
        """An entry as ProgressCallback.on_log prints it: 4.x rounds the epoch to
        2 places (5.x formats every float, logs())."""
        return self.logs(entry if self.v5 else {**entry, "epoch": round(entry["epoch"], 2)})

    # -- events ---------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "train":
            # on_train_begin opens the bar once the Trainer has logged its block.
            return [*self._err(self._training_block()),
                    *self.progress.on_train_begin(self.ident.hyper.total_steps, e.time)]
        if e.name == "validation":  # evaluation_loop's header: per_device_eval_batch_size
            self.eval_start = e.time
            return self._err(["", "***** Running Evaluation *****",
                              f"  Num examples = {sim.eval_samples(self.ident)}",
                              f"  Batch size = {self.ident.hyper.eval_batch}"])
        return []

    def _training_block(self) -> list[str]:
        """_inner_training_loop's "Train!" block, the same lines at 4.42.4,
        4.44.2, 4.46.3 and 5.0.0 (trainer.py; no "Num update steps per epoch"
        line at any of them)."""
        h = self.ident.hyper
        return ["***** Running training *****", f"  Num examples = {h.steps_per_epoch * h.global_batch:,}",
                f"  Num Epochs = {h.epochs:,}",
                f"  Instantaneous batch size per device = {h.micro_batch:,}",
                f"  Total train batch size (w. parallel, distributed & accumulation) = {h.global_batch:,}",
                f"  Gradient Accumulation steps = {h.grad_accum}",
                f"  Total optimization steps = {h.total_steps:,}",
                f"  Number of trainable parameters = {self._trainable():,}"]

    def _trainable(self) -> int:
        """get_model_param_count(model, trainable_only=True) on the model as
        prepared: FSDP has sharded it by then, so each rank counts its own
        shard (tatsu-lab/stanford_alpaca#266: 842,302,976 for a 7B on 8
        GPUs, 6,738,423,808 / 8; huggingface/transformers#40463); DeepSpeed
        ZeRO-3's placeholders are counted by their ds_numel (transformers#22193),
        the whole model. Each FSDP unit's flat parameter is padded to a multiple
        of the ranks; a Llama's layers already are, so the shard is the quotient."""
        i = self.ident
        if i.parallel.kind == "fsdp":
            return -(-i.model.params // i.parallel.dp)
        return i.model.params

    def _step(self, e: ev.Step) -> list[Line]:
        updated = self.progress.on_step_end(e.step, e.time)
        # _maybe_log_save_evaluate at a logging step: the mean loss since the last log, the
        # last step's grad norm (clip_grad_norm_'s float32 tensor), the scheduler's LR.
        logged = self.trainer_log.step(e.step, e.loss, e.grad_norm)
        if logged is None:  # the Trainer logs every logging_steps, not at the end (nor where
            return updated  # a callback stopped it: DefaultFlowCallback logs on logging_steps only)
        return [*updated, *self.progress.on_log(self.shown(logged), e.time)]

    def _validation(self, e: ev.Validation) -> list[Line]:
        # evaluation_loop: eval_loss is the float32 losses' mean, .item() of a NumPy float32.
        # Trainer.evaluate logs its metrics, then calls on_evaluate.
        entry = self.trainer_log.evaluation(e.step, e.val_loss, e.eval_time_s, e.samples)
        return [*self._predicted(e), *self.progress.on_log(self.shown(entry), e.time),
                *self.progress.on_evaluate(e.time)]

    def _predicted(self, e: ev.Validation) -> list[Line]:
        """The evaluation loop's batches, evenly spread over its time, each
        ending in on_prediction_step."""
        batches, start = self.ident.hyper.eval_batches, self.eval_start
        return [line for k in range(1, batches + 1)
                for line in self.progress.on_prediction_step(batches, start + e.eval_time_s * k / batches)]

    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        # The Trainer saves to <output_dir>/checkpoint-<step>; with no --output-dir, under
        # TrainingArguments' default output_dir.
        path = e.path.rstrip("/") if "checkpoint-" in e.path else f"{DEFAULT_OUTPUT}/checkpoint-{e.step}"
        # Trainer._rotate_checkpoints, after the save (trainer.py at v4.42.4 to v5.0.0), names
        # what Path(output_dir).glob found: a normalised path ("./out" is "out").
        folder = str(PurePosixPath(path).parent)
        rotated = [f"Deleting older checkpoint [{folder}/checkpoint-{s}] due to args.save_total_limit"
                   for s in e.deleted]
        return self._err([*self._saved(path, e.shards), *rotated] if self._saves_model else rotated)

    @property
    def _saves_model(self) -> bool:
        """save_model's _save runs (and logs) unless FSDP saves a sharded state
        dict (trainer.py `save_model` at v4.42.4 to v5.0.0: only a
        FULL_STATE_DICT is gathered and saved); accelerate's own lines are
        not shown at the Trainer's verbosity (checkpoint/fsdp.py)."""
        return self.ident is None or self.ident.parallel.state_dict != SHARDED_STATE_DICT

    def _export(self, e: ev.Export) -> list[Line]:
        """trainer.save_model() into the output dir, which the script calls
        after train() returns: its lines follow the summary's."""
        path = DEFAULT_OUTPUT if e.path.startswith(EXPORT_DEFAULT) else e.path.rstrip("/")
        if self._saves_model:
            self.export = self._saved(path, sum(f.endswith(".safetensors") for f in e.files))
        return []

    def _saved(self, path: str, shards: int) -> list[str]:
        """Trainer._save and save_pretrained's lines (trainer.py, modeling_utils.py,
        configuration_utils.py, generation/configuration_utils.py, at each
        pinned version): the config, the generation config (every *ForCausalLM
        can generate), the weights by the version's max_shard_size ("5GB" in
        4.x, "50GB" in 5.x); then the tokenizer's save_pretrained, for a
        model with one (world/tokenizers.py). `_save` then writes
        training_args.bin, which no line names (checkpoint/writer.py writes
        exactly these)."""
        saved = [f"Saving model checkpoint to {path}", f"Configuration saved in {path}/config.json",
                 f"Configuration saved in {path}/generation_config.json"]
        if shards > 1:
            limit = max_shard(self.ident.versions.transformers)[0]
            saved.append(f"The model is bigger than the maximum size per checkpoint ({limit}) and is going "
                         f"to be split in {shards} checkpoint shards. You can find where each parameters has "
                         f"been saved in the index located at {path}/model.safetensors.index.json.")
        else:
            saved.append(f"Model weights saved in {path}/model.safetensors")
        return [*saved, *self._tokenizer_saved(path)]

    def _tokenizer_saved(self, path: str) -> list[str]:
        """tokenization_utils_base.py save_pretrained's line for each file it
        names (data/style-hf.toml [tokenizer_saved])."""
        config = tokenizers.for_model(self.ident.model.name)
        if config is None:
            return []
        said = texts.load("style-hf")["tokenizer_saved"]
        return [said[name]["text"].format(path=f"{path}/{name}")
                for name in tokenizers.logged(config, self.ident.versions.transformers)]

    def _summary(self, e: ev.Summary) -> list[Line]:
        """The end of _inner_training_loop, stopped early by a callback or not
        (trainer.py, 4.46.3 and 5.0.0 alike): "Training completed", then
        speed_metrics over the *planned* samples and steps (num_train_samples,
        state.max_steps) whatever was trained, the mean loss of the steps
        done, the epoch reached (world/trainer_log.py train_end); on_train_end
        closes the bar where it stands."""
        done = self._err(["", "", "Training completed. Do not forget to share your model on "
                          "huggingface.co/models =)", "", ""])
        logged = self.trainer_log.train_end(e.steps, e.train_time_s)
        logged.pop("total_flos")  # ProgressCallback.on_log drops it from what it prints
        stats = self.shown(logged)
        # on_log, then on_train_end's close: a bar stopped short keeps its total.
        return [*done, *self.progress.on_log(stats, e.time), *self.progress.on_train_end(e.time),
                *self._err(self.export)]

    @staticmethod
    def _err(texts: list[str]) -> list[Line]:
        return [Line(t, STDERR, 0) for t in texts]
