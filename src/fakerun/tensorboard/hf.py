"""The HF Trainer's event files: transformers' TensorBoardCallback
(integrations/integration_utils.py at v4.42.4, v4.44.2, v4.46.3, v5.0.0) on
world process zero, with torch.utils.tensorboard's SummaryWriter.

- on_train_begin makes the writer: in 4.x at `args.logging_dir` (--logging_dir,
  else TrainingArguments' `<output_dir>/runs/<%b%d_%H-%M-%S>_<hostname>`,
  stamped as the arguments are parsed); in 5.0 at $TENSORBOARD_LOGGING_DIR,
  else `<output_dir>/runs/...` stamped there and then (default_logdir; 5.0
  ignores --logging_dir). It adds the `args` text (`args.to_json_string()`,
  checkpoint/training_args.py) and the `model_config` text (the model
  config's to_json_string(), config.json's very text).
- on_log writes every number of the log dict as a scalar at
  state.global_step, its key rewritten by rewrite_logs (`eval_x` is
  `eval/x`, anything else `train/x`), then flushes: the logging steps'
  loss, grad_norm, learning_rate, epoch; each evaluation's eval/loss,
  eval/runtime, eval/samples_per_second, eval/steps_per_second; the end's
  train_runtime, train_samples_per_second, train_steps_per_second,
  total_flos, train_loss (the Trainer's log dicts: world/trainer_log.py,
  the very values the script prints).
- on_train_end closes it; a log after that (an evaluate() after train())
  makes a new writer, a new file (its name's counter one higher).

fakerun's --tensorboard DIR is the logging dir (over $TENSORBOARD_LOGGING_DIR
in 5.0), and training_args' report_to and logging_dir in the `args` text say
so."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint import training_args as targs
from fakerun.checkpoint.model_files import ModelFiles
from fakerun.render.styles.hf import DEFAULT_OUTPUT
from fakerun.render.styles.routes import EventRoutes
from fakerun.tensorboard.choice import Board
from fakerun.tensorboard.writes import Close, Open, Scalar, Text, Write
from fakerun.world.trainer_log import TrainerLog, major


def rewrite_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """integration_utils.py rewrite_logs."""
    out = {}
    for key, value in logs.items():
        if key.startswith("eval_"):
            out["eval/" + key[5:]] = value
        elif key.startswith("test_"):
            out["test/" + key[5:]] = value
        else:
            out["train/" + key] = value
    return out


class HfBoard(EventRoutes):
    def __init__(self, board: Board, script_args: tuple[str, ...], output_dir: Path | None,
                 environ_dir: str | None = None) -> None:
        """`environ_dir`: $TENSORBOARD_LOGGING_DIR, which 5.0's callback reads."""
        self.board, self.script_args = board, script_args
        self.environ_dir = os.path.expanduser(environ_dir) if environ_dir else ""
        out = targs.given(script_args, {"output_dir": "str"}).get("output_dir")
        self.output_dir = out or (str(output_dir) if output_dir else DEFAULT_OUTPUT)
        self.log: TrainerLog | None = None
        self.parsed_at = 0.0  # when TrainingArguments stamped its logging_dir (4.x)
        self.logdir, self.open = "", False
        self._handlers: dict[type, Callable[[Any], list[Write]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Summary: self._summary}

    @property
    def v5(self) -> bool:
        return major(self.ident.versions.transformers) >= 5

    def writes(self, e: ev.Event) -> list[Write]:
        if isinstance(e, ev.RunStarted):  # a new script: its arguments parsed now, no writer yet
            self.parsed_at, self.logdir, self.open = e.time, "", False
            return []
        return self.routed(e) or []

    def _phase(self, e: ev.Phase) -> list[Write]:
        if (e.name, e.stage) == ("init", "nccl"):  # __post_init__'s stamp, then the devices' set-up
            self.parsed_at = e.time
        if e.name != "train":
            return []
        model = ModelFiles(self.ident, targs.given(self.script_args, {"model_name_or_path": "str"})
                           .get("model_name_or_path") or "")
        args = self._args_text()
        return [*self._opened(e.time), *([Text("args", args, None, e.time)] if args is not None else []),
                Text("model_config", model.config().decode(), None, e.time)]

    def _opened(self, when: float) -> list[Write]:
        """_init_summary_writer, where no writer is open."""
        if self.open:
            return []
        self.open = True
        self.logdir = self.logdir or self.board.logdir or self._default_logdir(when)
        return [Open(self.logdir, when)]

    def _default_logdir(self, when: float) -> str:
        given = targs.given(self.script_args, {"logging_dir": "str"}).get("logging_dir")
        if given and not self.v5:
            return given
        if self.environ_dir and self.v5:
            return self.environ_dir
        stamp = targs.logdir_stamp(when if self.v5 else self.parsed_at, self.ident.hosts[0])
        return f"{self.output_dir.rstrip('/')}/runs/{stamp}"

    def _args_text(self) -> str | None:
        """The arguments as the run has them, tensorboard installed."""
        version = self.ident.versions.transformers
        run = {**targs.ran_with(self.ident.hyper, self.script_args),
               **targs.with_tensorboard(version, self.script_args, self.board.logdir)}
        stamp = targs.logdir_stamp(self.parsed_at, self.ident.hosts[0])
        return targs.to_json(version, self.script_args, self.output_dir, stamp, run)

    def _logged(self, entry: dict[str, Any] | None, step: int, when: float) -> list[Write]:
        if entry is None:
            return []
        scalars = [Scalar(tag, float(value), step, when) for tag, value in rewrite_logs(entry).items()
                   if isinstance(value, (int, float))]
        return [*self._opened(when), *scalars]

    def _step(self, e: ev.Step) -> list[Write]:
        return self._logged(self._log().step(e.step, e.loss, e.grad_norm), e.step, e.time)

    def _validation(self, e: ev.Validation) -> list[Write]:
        entry = self._log().evaluation(e.step, e.val_loss, e.eval_time_s, e.samples)
        return self._logged(entry, e.step, e.time)

    def _summary(self, e: ev.Summary) -> list[Write]:
        done = self._logged(self._log().train_end(e.steps, e.train_time_s), e.steps, e.time)
        self.open = False
        return [*done, Close(e.time)]

    def _log(self) -> TrainerLog:
        if self.log is None:
            self.log = TrainerLog(self.ident)
        return self.log
