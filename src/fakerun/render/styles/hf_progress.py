"""The HF Trainer's progress bars: transformers' ProgressCallback
(src/transformers/trainer_callback.py, the same at v4.42.4, v4.44.2, v4.46.3
and v5.0.0), on world process zero, with its tqdm bars (render/styles/tqdm.py's
Bar) driven by the run's simulated clock. Its methods are the callback's
hooks; each returns the writes they make: tqdm's on stderr (a redraw is `\\r`
and the bar, no newline), the log dicts on stdout."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.render.lines import STDERR, STDOUT, Line
from fakerun.render.styles.tqdm import Bar


@dataclass
class ProgressCallback:
    rank: int = 0  # the Trainer's world process zero
    training_bar: Bar | None = None  # from on_train_begin to on_train_end
    prediction_bar: Bar | None = None  # during an evaluation
    current_step: int = 0  # the global step the bar last counted (on_train_begin sets 0)

    def on_train_begin(self, max_steps: int, now: float) -> list[Line]:
        """tqdm(total=state.max_steps, dynamic_ncols=True): its first print."""
        self.training_bar, opened = Bar.opened(max_steps, now)
        self.current_step = 0
        return self._drawn(opened)

    def on_step_end(self, global_step: int, now: float) -> list[Line]:
        """update(state.global_step - self.current_step): one step, or, the
        first after a resume, every step up to the checkpoint's too."""
        steps, self.current_step = global_step - self.current_step, global_step
        return self._drawn(self.training_bar.update(steps, now)) if self.training_bar else []

    def on_prediction_step(self, batches: int, now: float) -> list[Line]:
        """After an evaluation batch: the first opens the prediction bar,
        tqdm(total=len(eval_dataloader), leave=self.training_bar is None), at
        position 1 under an open training bar; each updates it. The writes of
        one batch are apart from the next's (pause)."""
        written = ""
        if self.prediction_bar is None:
            under = self.training_bar is not None and not self.training_bar.closed
            self.prediction_bar, written = Bar.opened(batches, now, pos=int(under), leave=not under)
        written += self.prediction_bar.update(1, now)
        return self._drawn(written, pause=True)

    def on_log(self, text: str, now: float) -> list[Line]:
        """training_bar.write(str(logs)): tqdm's external_write_mode blanks
        the open bars, prints the dict on stdout, then redraws them. It takes
        the bars in its instance set's order: the creation order, which a
        fresh set gives (a process's earlier bars could change it)."""
        bars = [b for b in (self.training_bar, self.prediction_bar) if b is not None and not b.closed]
        return [*(line for b in bars for line in self._drawn(b.clear())), Line(text, STDOUT, self.rank),
                *(line for b in bars for line in self._drawn(b.refresh(now)))]

    def on_evaluate(self, now: float) -> list[Line]:
        """The prediction bar closes (after Trainer.evaluate logged its metrics)."""
        closed, self.prediction_bar = (self.prediction_bar.close(now) if self.prediction_bar else ""), None
        return self._drawn(closed)

    def on_train_end(self, now: float) -> list[Line]:
        """training_bar.close(): the bar at its overall rate, where it stands."""
        return self._drawn(self.training_bar.close(now)) if self.training_bar else []

    def _drawn(self, written: str, pause: bool = False) -> list[Line]:
        """What tqdm wrote to stderr, as one write."""
        if not written:
            return []
        if written.endswith("\n"):
            return [Line(written[:-1], STDERR, self.rank, pause=pause)]
        return [Line(written, STDERR, self.rank, end="", pause=pause)]
