"""fakerun's own tags, for the styles whose framework writes no event
files of its own here (the default torchrun script, and DeepSpeed's, whose
ds_config `tensorboard` monitor fakerun's config does not model): a script
that makes `torch.utils.tensorboard.SummaryWriter(log_dir=DIR)` on global
rank 0 as training starts, adds one point per optimizer step and one per
evaluation, with the values its JSONL `step` and `validation` events carry,
and closes it after training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakerun import events as ev
from fakerun.render.styles.routes import EventRoutes
from fakerun.tensorboard.choice import Board
from fakerun.tensorboard.writes import Close, Open, Scalar, Write

# Tag -> the Step field it plots (README "Point your dashboards at it").
STEP_TAGS = {"train/loss": "loss", "train/ppl": "ppl", "train/lr": "lr", "train/grad_norm": "grad_norm",
             "train/tokens_per_s": "tokens_per_s", "train/samples_per_s": "samples_per_s",
             "train/step_time_s": "step_time_s", "train/mfu": "mfu"}
VALIDATION_TAGS = {"val/loss": "val_loss", "val/ppl": "val_ppl"}


class OwnBoard(EventRoutes):
    def __init__(self, board: Board) -> None:
        self.board = board
        self._handlers: dict[type, Callable[[Any], list[Write]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Summary: self._summary}

    def writes(self, e: ev.Event) -> list[Write]:
        return self.routed(e) or []

    def _phase(self, e: ev.Phase) -> list[Write]:
        return [Open(self.board.logdir, e.time)] if e.name == "train" else []

    def _step(self, e: ev.Step) -> list[Write]:
        return self._points(e, STEP_TAGS, e.step, e.time)

    def _validation(self, e: ev.Validation) -> list[Write]:
        return self._points(e, VALIDATION_TAGS, e.step, e.time)

    def _summary(self, e: ev.Summary) -> list[Write]:
        return [Close(e.time)]

    @staticmethod
    def _points(e: Any, tags: dict[str, str], step: int, when: float) -> list[Write]:
        """NaN and infinities go in as they are (a float32 holds them), as a
        diverged run's would."""
        return [Scalar(tag, float(getattr(e, field)), step, when) for tag, field in tags.items()]
