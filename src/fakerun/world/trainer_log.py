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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fakerun.world import physics as sim
from fakerun.world.trainer import LossTally, TrainerArgs, float32, trainer_epoch

if TYPE_CHECKING:
    from fakerun.world.jobs import Hyper, Identity

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
