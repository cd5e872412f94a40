"""The HF Trainer's log: the dicts `Trainer.log` records at each logging
step and evaluation, which the script prints (render/styles/hf.py, through
ProgressCallback's formatting) and TrainerState keeps as its log_history
(checkpoint/writer.py's trainer_state.json). One source, so that the log and
the files agree to the last digit.

Sources (huggingface/transformers at v4.42.4, v4.44.2, v4.46.3, v5.0.0):
trainer.py `_maybe_log_save_evaluate` (the interval-mean loss, rounded to 4
places in 4.x; grad_norm a float32 tensor's .item(); `_get_learning_rate`),
`evaluation_loop` (eval_loss the float32 losses' mean), trainer_utils.py
`speed_metrics` (runtime to 4 places, rates to 3), `Trainer.log` (adds the
epoch, then the step to the entry log_history keeps).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fakerun.world import physics as sim
from fakerun.world.tensors import DTYPES, layout
from fakerun.world.trainer import LossTally, TrainerArgs, float32, trainer_epoch

if TYPE_CHECKING:
    from fakerun.world.jobs import Hyper, Identity

# The nn.Embedding weights num_parameters(exclude_embeddings=True) leaves out.
EMBEDDING = re.compile(r"embed|\bwte\b|\bwpe\b")
DEFAULT_STEPS = 500  # TrainerState's logging/eval/save_steps where the arguments set none


def major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass
class TrainerLog:
    """What the Trainer logs of a run, step by step (feed every step)."""

    ident: Identity
    tally: LossTally = field(default_factory=LossTally)

    @property
    def v5(self) -> bool:
        return major(self.ident.versions.transformers) >= 5

    def step(self, step: int, loss: float, grad_norm: float) -> dict[str, Any] | None:
        """The entry logged after `step`, if the cadence logs it: the mean loss
        since the last log, the last step's grad norm, the scheduler's LR, the epoch."""
        self.tally.add(step, loss)
        if not self.ident.hyper.logs_after(step):
            return None
        mean = self.tally.logged(step)
        return {"loss": mean if self.v5 else round(mean, 4), "grad_norm": float32(grad_norm),
                "learning_rate": self.learning_rate(step), "epoch": self.epoch(step)}

    def evaluation(self, step: int, val_loss: float, eval_time_s: float, samples: int) -> dict[str, Any]:
        runtime = max(eval_time_s, 1e-9)
        return {"eval_loss": float32(val_loss), "eval_runtime": round(eval_time_s, 4),
                "eval_samples_per_second": round(samples / runtime, 3),
                "eval_steps_per_second": round(self.ident.hyper.eval_batches / runtime, 3),
                "epoch": self.epoch(step)}

    def train_end(self, steps: int, train_time_s: float) -> dict[str, Any]:
        """The metrics _inner_training_loop logs at its end: speed_metrics over
        the *planned* samples and steps (num_train_samples, state.max_steps)
        whatever was trained, total_flos, the mean loss of the steps done,
        then Trainer.log's epoch (trainer.py, 4.46.3 and 5.0.0 alike)."""
        h, runtime = self.ident.hyper, max(train_time_s, 1e-9)
        return {"train_runtime": round(train_time_s, 4),
                "train_samples_per_second": round(h.total_steps * h.global_batch / runtime, 3),
                "train_steps_per_second": round(h.total_steps / runtime, 3),
                "total_flos": self.total_flos(steps), "train_loss": self.train_loss(steps),
                "epoch": self.epoch(steps)}

    def total_flos(self, step: int) -> float:
        """Trainer.store_flos: each process's floating_point_ops (6 x tokens x
        the parameters less the embeddings', modeling_utils.py), summed over
        the processes in a float32 tensor (distributed_broadcast_scalars):
        rounded here once, not at each save."""
        tensors = layout(self.ident.model, DTYPES[self.ident.gpu.precision][0]).tensors
        embeddings = sum(math.prod(t.shape) for t in tensors if EMBEDDING.search(t.name))
        per_step = 6.0 * (self.ident.model.params - embeddings) * self.ident.hyper.tokens_per_step
        return float32(per_step * step)

    def train_loss(self, steps: int) -> float:
        return self.tally.train_loss(steps)

    def epoch(self, step: int) -> float:
        return trainer_epoch(self.ident.hyper, step)

    def learning_rate(self, step: int) -> float:
        """_get_learning_rate() where the Trainer logs at `step`: 4.x after the
        scheduler stepped (0.0 at the end of a linear schedule); 5.x passes the
        LR taken before lr_scheduler.step() ("get leaning rate before update",
        trainer.py), the one the step itself used."""
        return sim.learning_rate(self.ident, step - 1 if self.v5 else step)


def state_steps(t: TrainerArgs | None, name: str, h: Hyper) -> int:
    """TrainerState.compute_steps (trainer_callback.py at v4.46.3): the
    arguments' logging/eval/save_steps, a ratio below 1 of max_steps rounded
    up; 500 where they leave it None (eval_steps unless evaluating by steps,
    when TrainingArguments.__post_init__ takes logging_steps). Without the
    Trainer's arguments on the launch line (a bare --style hf), the run's own
    cadence, as the arguments that give it would say."""
    if t is None:
        save = h.eval_every if h.save_every is None else h.save_every
        every = {"logging_steps": h.log_every, "eval_steps": h.eval_every, "save_steps": save}[name]
        return every or DEFAULT_STEPS
    given = {"logging_steps": t.logging_steps, "eval_steps": t.eval_steps, "save_steps": t.save_steps}[name]
    if given is None and name == "eval_steps" and (t.evaluation_strategy or t.eval_strategy) == "steps":
        given = t.logging_steps
    value = float(DEFAULT_STEPS if given is None else given)
    return math.ceil(h.total_steps * value) if 0 < value < 1 else int(value)
