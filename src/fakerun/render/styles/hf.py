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
from typing import Any

from fakerun import events as ev
from fakerun.render.lines import STDERR, Line
from fakerun.render.styles.hf_progress import ProgressCallback
from fakerun.render.styles.routes import EventRoutes

DEFAULT_OUTPUT = "trainer_output"  # TrainingArguments.output_dir's default


class HfLines(EventRoutes):
    # The example scripts' first collective is TrainingArguments.main_process_first's
    # barrier (PartialState.wait_for_everyone, no device_ids) around the dataset
    # map, and neither they nor the Trainer destroy the process group.
    barrier_first = True
    leaves_process_group = True

    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.losses: list[float] = []  # every step's: the Trainer's train_loss is their mean
        self.progress = ProgressCallback()
        self.eval_start = 0.0  # when the evaluation loop began
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Summary: self._summary,
        }

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
            # on_train_begin opens the bar once the Trainer has logged its block.
            return [*self._err(self._training_block()),
                    *self.progress.on_train_begin(self.ident.hyper.total_steps, e.time)]
        if e.name == "validation":
            self.eval_start = e.time
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
        updated = self.progress.on_step_end(e.step, e.time)
        if e.step % h.log_every:  # the Trainer logs every logging_steps, not at the end
            # Nor where a callback stopped it (control.should_training_stop: DefaultFlowCallback
            # logs on logging_steps only).
            return updated
        logged = self.logs({"loss": round(e.loss, 4), "grad_norm": e.grad_norm, "learning_rate": e.lr,
                            "epoch": round(self.epoch(e.step), 2)})
        return [*updated, *self.progress.on_log(logged, e.time)]

    def _validation(self, e: ev.Validation) -> list[Line]:
        h, runtime = self.ident.hyper, max(e.eval_time_s, 1e-9)
        metrics = self.logs({"eval_loss": e.val_loss, "eval_runtime": round(e.eval_time_s, 4),
                             "eval_samples_per_second": round(e.samples / runtime, 3),
                             "eval_steps_per_second": round(h.eval_batches / runtime, 3),
                             "epoch": round(self.epoch(e.step), 2)})
        # Trainer.evaluate logs its metrics, then calls on_evaluate.
        return [*self._predicted(e), *self.progress.on_log(metrics, e.time),
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
        saved = [f"Saving model checkpoint to {path}", f"Configuration saved in {path}/config.json",
                 f"Configuration saved in {path}/generation_config.json"]
        if e.shards > 1:
            saved.append(f"The model is bigger than the maximum size per checkpoint (5GB) and is going to "
                         f"be split in {e.shards} checkpoint shards. You can find where each parameters has "
                         f"been saved in the index located at {path}/model.safetensors.index.json.")
        else:
            saved.append(f"Model weights saved in {path}/model.safetensors")
        return self._err([*saved, f"tokenizer config file saved in {path}/tokenizer_config.json",
                          f"Special tokens file saved in {path}/special_tokens_map.json"])

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
        # on_log, then on_train_end's close: a bar stopped short keeps its total.
        return [*done, *self.progress.on_log(stats, e.time), *self.progress.on_train_end(e.time)]

    @staticmethod
    def _err(texts: list[str]) -> list[Line]:
        return [Line(t, STDERR, 0) for t in texts]
