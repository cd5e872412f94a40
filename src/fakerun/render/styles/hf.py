"""`--style hf`: what a script built on the transformers Trainer prints, as
the pinned transformers version prints it: huggingface/transformers v4.46.3
(and v4.42.4, v4.44.2, v5.0.0) src/transformers/trainer.py (the Trainer's
log lines), src/transformers/trainer_callback.py (ProgressCallback: the tqdm
bar and `training_bar.write(str(logs))`, on world process zero only) and
src/transformers/utils/logging.py (the library's StreamHandler on stderr).

Only global rank 0 logs (the Trainer's "world process zero"). The Trainer's
logger (INFO, no formatter) and the tqdm bar write to stderr; the log dicts
go through `tqdm.write`, to stdout. A bar refresh is a line of its own here:
in a terminal tqdm redraws it in place, in a file it separates refreshes
with a carriage return.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from pathlib import PurePosixPath
from typing import Any

from fakerun import events as ev
from fakerun.render.lines import STDERR, STDOUT, Line
from fakerun.render.styles.routes import EventRoutes
from fakerun.render.styles.tqdm import meter
from fakerun.world.tensors import max_shard

DEFAULT_OUTPUT = "trainer_output"  # TrainingArguments.output_dir's default
EXPORT_DEFAULT = "./models/"  # an export's path where no --output-dir was given (coordinator/timeline.py)


class HfLines(EventRoutes):
    # The example scripts' first collective is TrainingArguments.main_process_first's
    # barrier (PartialState.wait_for_everyone, no device_ids) around the dataset
    # map, and neither they nor the Trainer destroy the process group.
    barrier_first = True
    leaves_process_group = True

    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.losses: list[float] = []  # every step's: the Trainer's train_loss is their mean
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
        return []  # the Trainer has none: its first words are the training block

    # -- the Trainer's log dicts ---------------------------------------------
    def logs(self, values: dict[str, float | int]) -> str:
        """str(dict) as the pinned version prints it: 4.x raw floats (rounded
        where the Trainer rounds them), 5.x every float as f"{v:.4g}", quoted."""
        if self.v5:
            values = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()}
        return str(values)

    def epoch(self, step: int) -> float:
        return step / self.ident.hyper.steps_per_epoch

    # -- events ---------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "train":
            return self._err(self._training_block())
        if e.name == "validation":
            h = self.ident.hyper
            return self._err(["", "***** Running Evaluation *****",
                              f"  Num examples = {h.eval_batches * h.micro_batch * self.ident.world}",
                              f"  Batch size = {h.micro_batch}"])
        return []

    def _training_block(self) -> list[str]:
        i, h = self.ident, self.ident.hyper
        lines = ["***** Running training *****", f"  Num examples = {h.steps_per_epoch * h.global_batch:,}",
                 f"  Num Epochs = {h.epochs:,}"]
        if self.v5:
            lines.append(f"  Num update steps per epoch = {h.steps_per_epoch:,}")
        return lines + [f"  Instantaneous batch size per device = {h.micro_batch:,}",
                        f"  Total train batch size (w. parallel, distributed & accumulation) = "
                        f"{h.global_batch:,}",
                        f"  Gradient Accumulation steps = {h.grad_accum}",
                        f"  Total optimization steps = {h.total_steps:,}",
                        f"  Number of trainable parameters = {i.model.params:,}"]

    def _step(self, e: ev.Step) -> list[Line]:
        self.losses.append(e.loss)
        h = self.ident.hyper
        if e.step % h.log_every:  # the Trainer logs every logging_steps, not at the end
            # Nor where a callback stopped it (control.should_training_stop: DefaultFlowCallback
            # logs on logging_steps only), but the bar, redrawn every step, stops there.
            return [self._bar(e)] if e.step == e.max_steps or e.stopped else []
        logged = self.logs({"loss": round(e.loss, 4), "grad_norm": e.grad_norm, "learning_rate": e.lr,
                            "epoch": round(self.epoch(e.step), 2)})
        return [Line(logged, STDOUT, 0), self._bar(e)]

    def _bar(self, e: ev.Step) -> Line:
        # tqdm's remaining time counts the iterations left, not the evaluations between them.
        return Line(meter(e.step, e.max_steps, e.elapsed_s, e.eta_s - e.pauses_s, e.step_time_s), STDERR, 0)

    def _validation(self, e: ev.Validation) -> list[Line]:
        h, runtime = self.ident.hyper, max(e.eval_time_s, 1e-9)
        return [Line(self.logs({"eval_loss": e.val_loss, "eval_runtime": round(e.eval_time_s, 4),
                                "eval_samples_per_second": round(e.samples / runtime, 3),
                                "eval_steps_per_second": round(h.eval_batches / runtime, 3),
                                "epoch": round(self.epoch(e.step), 2)}), STDOUT, 0)]

    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        # The Trainer saves to <output_dir>/checkpoint-<step>; with no --output-dir, under
        # TrainingArguments' default output_dir.
        path = e.path.rstrip("/") if "checkpoint-" in e.path else f"{DEFAULT_OUTPUT}/checkpoint-{e.step}"
        # Trainer._rotate_checkpoints, after the save (trainer.py at v4.42.4 to v5.0.0), names
        # what Path(output_dir).glob found: a normalised path ("./out" is "out").
        folder = str(PurePosixPath(path).parent)
        rotated = [f"Deleting older checkpoint [{folder}/checkpoint-{s}] due to args.save_total_limit"
                   for s in e.deleted]
        return self._err([*self._saved(path, e.shards), *rotated])

    def _export(self, e: ev.Export) -> list[Line]:
        """trainer.save_model() into the output dir, which the script calls
        after train() returns: its lines follow the summary's."""
        path = DEFAULT_OUTPUT if e.path.startswith(EXPORT_DEFAULT) else e.path.rstrip("/")
        self.export = self._saved(path, sum(f.endswith(".safetensors") for f in e.files))
        return []

    def _saved(self, path: str, shards: int) -> list[str]:
        """Trainer._save and save_pretrained's lines (trainer.py, modeling_utils.py,
        configuration_utils.py, generation/configuration_utils.py, at each
        pinned version): the config, the generation config (every *ForCausalLM
        can generate), the weights by the version's max_shard_size ("5GB" in
        4.x, "50GB" in 5.x). The script's Trainer has no tokenizer: no
        tokenizer files (checkpoint/writer.py writes exactly these)."""
        saved = [f"Saving model checkpoint to {path}", f"Configuration saved in {path}/config.json",
                 f"Configuration saved in {path}/generation_config.json"]
        if shards > 1:
            limit = max_shard(self.ident.versions.transformers)[0]
            saved.append(f"The model is bigger than the maximum size per checkpoint ({limit}) and is going "
                         f"to be split in {shards} checkpoint shards. You can find where each parameters has "
                         f"been saved in the index located at {path}/model.safetensors.index.json.")
        else:
            saved.append(f"Model weights saved in {path}/model.safetensors")
        return saved

    def _summary(self, e: ev.Summary) -> list[Line]:
        """The end of _inner_training_loop, stopped early by a callback or not
        (trainer.py, 4.46.3 and 5.0.0 alike): "Training completed", then
        speed_metrics over the *planned* samples and steps (num_train_samples,
        state.max_steps) whatever was trained, the mean loss of the steps
        done, the epoch reached; on_train_end closes the bar where it stands."""
        h, runtime = self.ident.hyper, max(e.train_time_s, 1e-9)
        done = self._err(["", "", "Training completed. Do not forget to share your model on "
                          "huggingface.co/models =)", "", ""])
        stats = self.logs({"train_runtime": round(e.train_time_s, 4),
                           "train_samples_per_second": round(h.total_steps * h.global_batch / runtime, 3),
                           "train_steps_per_second": round(h.total_steps / runtime, 3),
                           "train_loss": sum(self.losses) / max(1, len(self.losses)),
                           "epoch": round(self.epoch(e.steps), 2)})
        # tqdm's close: a bar stopped short keeps its total, and its estimate of the time left.
        left = 0.0 if e.steps >= h.total_steps else None
        closed = meter(e.steps, h.total_steps, e.train_time_s, left, runtime / max(1, e.steps))
        bar = [Line(closed, STDERR, 0)] if self.losses else []  # the bar closes only if training had begun
        return [*done, Line(stats, STDOUT, 0), *bar, *self._err(self.export)]

    @staticmethod
    def _err(texts: list[str]) -> list[Line]:
        return [Line(t, STDERR, 0) for t in texts]
