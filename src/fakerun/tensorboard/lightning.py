"""Lightning's default logger once tensorboard is installed: a
TensorBoardLogger(save_dir=default_root_dir) (Lightning-AI/pytorch-lightning
2.4.0, 2.5.0, 2.6.x: trainer/connectors/logger_connector/logger_connector.py
configure_logger; fabric/loggers/tensorboard.py and pytorch/loggers/
tensorboard.py), global rank 0 alone. Its SummaryWriter is made at the first
use of `experiment`, in `<root>/lightning_logs/version_N` (the version the
launch found free, RunStarted.logger_version, as the screen's v_num says):

- at fit start, _log_hyperparams: log_hyperparams(the module's hparams) logs
  the default `hp_metric` -1 at step 0, then torch's summary.hparams
  (experiment, session start, session end); save() flushes and writes
  hparams.yaml (checkpoint/lightning.py writes that file, the same one);
- at each logging step and validation, log_metrics: the script's
  `train_loss` or `val_loss` (a float32 tensor's item), then the `epoch` the
  logger connector adds, at the optimizer steps done before it, each row the
  metrics.csv one a CSVLogger would have written (checkpoint/lightning.py
  logged); save() flushes;
- finalize (fit's end, and the SLURM requeue handler's) closes the writer;
  torch's SummaryWriter makes a new file at its next use (the counter one
  higher).
Inside a Slurm job the default logger's version is the job id
(SLURMEnvironment.job_id(): launcher/build.py logger_version)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.lightning import LOGS, hparams, logged
from fakerun.render.styles.routes import EventRoutes
from fakerun.tensorboard.choice import Board
from fakerun.tensorboard.writes import Close, Hparams, Open, Scalar, Write

HP_METRIC = "hp_metric"  # TensorBoardLogger(default_hp_metric=True)'s placeholder


class LightningBoard(EventRoutes):
    def __init__(self, board: Board, script_args: tuple[str, ...], seed: int) -> None:
        self.board, self.script_args, self.seed = board, script_args, seed
        self.version, self.open = 0, False
        self._handlers: dict[type, Callable[[Any], list[Write]]] = {
            ev.Phase: self._phase, ev.Step: self._logged, ev.Validation: self._logged,
            ev.HpcCheckpoint: self._finalized}

    def writes(self, e: ev.Event) -> list[Write]:
        if isinstance(e, ev.RunStarted):  # a new script: its logger's version, no writer yet
            self.version, self.open = e.logger_version, False
            return []
        return self.routed(e) or []

    def _opened(self, when: float) -> list[Write]:
        if self.open:
            return []
        self.open = True
        return [Open(f"{self.board.logdir.rstrip('/')}/{LOGS}/version_{self.version}", when)]

    def _phase(self, e: ev.Phase) -> list[Write]:
        if e.name == "train":  # _log_hyperparams at fit start
            saving = Saving(Path(self.board.logdir), self.ident, self.seed, script_args=self.script_args)
            return [*self._opened(e.time), Scalar(HP_METRIC, -1.0, 0, e.time),
                    Hparams(hparams(saving), (HP_METRIC,), e.time)]
        if e.name == "export":  # trainer.fit returned: the logger's finalize
            return self._finalized(e)
        return []

    def _logged(self, e: ev.Step | ev.Validation) -> list[Write]:
        row = logged(e, self.ident.hyper.log_every)
        if row is None:
            return []
        step = row.pop("step")
        epoch = row.pop("epoch")  # the connector's setdefault: after the script's own keys
        return [*self._opened(e.time), *(Scalar(k, float(v), step, e.time) for k, v in row.items()),
                Scalar("epoch", float(epoch), step, e.time)]

    def _finalized(self, e: Any) -> list[Write]:
        if not self.open:
            return []
        self.open = False
        return [Close(e.time)]
