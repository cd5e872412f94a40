"""The event sink that writes the run's TensorBoard event files: on the
agent of the node whose rank writes them (rank 0's for most frameworks,
the last rank's for Megatron), as that rank's process would, so no file is
written twice. A style's board says what its SummaryWriter is asked to do
(writes.py); this carries it out, in the writing process's name: its host
as the logs show it, its pid as `fakerun smi` shows it, and its count of
writers made (the file names' last field), which a new worker group (a
restart) starts again."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fakerun import events as ev
from fakerun.tensorboard import summaries
from fakerun.tensorboard.choice import Board
from fakerun.tensorboard.records import EventFile, file_name
from fakerun.tensorboard.writes import Close, Hparams, Open, Scalar, Text, Write

# The events any board or the sink reads: the rest (every collective's) pass at the cost of a set look-up.
READ = frozenset({ev.RunStarted, ev.RunIdentity, ev.RankStarted, ev.RunFinished, ev.Phase, ev.Step,
                  ev.Validation, ev.Summary, ev.HpcCheckpoint})


class StyleBoard(Protocol):
    def writes(self, e: ev.Event) -> list[Write]: ...


class TensorBoardSink:
    console = False
    clocked = False  # every record is written as its event comes: nothing waits for a clock

    def __init__(self, board: Board, style: StyleBoard) -> None:
        self.board, self.style = board, style
        self.file: EventFile | None = None
        self.made = 0  # SummaryWriters the writing process has made (_global_uid)
        self.pid, self.host = 0, ""

    def event(self, e: ev.Event) -> None:
        if type(e) not in READ:
            return
        if isinstance(e, ev.RunStarted):  # a new worker group: a new writing process
            self._close()
            self.made, self.pid = 0, 0
        elif isinstance(e, ev.RunIdentity):
            self.host = e.identity.host(self.board.rank)
        elif isinstance(e, ev.RankStarted) and e.rank == self.board.rank:
            self.pid = e.pid
        for write in self.style.writes(e):
            self._do(write)
        if self.file is not None:
            self.file.flush()
        if isinstance(e, ev.RunFinished):  # the process has exited: its files are closed
            self._close()

    def _do(self, w: Write) -> None:
        if isinstance(w, Open):
            self._close()
            name = file_name(w.time, self.host, self.pid, self.made)
            self.file = EventFile(Path(w.logdir), name, w.time, self.board.option)
            self.made += 1
        elif isinstance(w, Close):
            self._close()
        elif self.file is not None:
            for summary, step in self._summaries(w):
                self.file.add(summaries.event(summary, step, w.time))

    @staticmethod
    def _summaries(w: Scalar | Text | Hparams) -> list[tuple[Any, int | None]]:
        if isinstance(w, Scalar):
            return [(summaries.scalar(w.tag, w.value), w.step)]
        if isinstance(w, Text):
            return [(summaries.text(w.tag, w.text), w.step)]
        return [(s, None) for s in summaries.hparams(w.params, w.metrics)]

    def _close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            file.close()

    def flush(self) -> None:
        """Each event's records are written as it comes."""

    def close(self) -> None:
        self._close()


def build(board: Board, script_args: tuple[str, ...], output_dir: Path | None, seed: int,
          environ: Mapping[str, str]) -> TensorBoardSink:
    """The sink with its framework's board (each module imported only when a
    run uses it); `environ`: the environment the script is started with."""
    styled: StyleBoard
    if board.kind == "hf":
        from fakerun.tensorboard.hf import HfBoard
        styled = HfBoard(board, script_args, output_dir, environ.get("TENSORBOARD_LOGGING_DIR"))
    elif board.kind == "lightning":
        from fakerun.tensorboard.lightning import LightningBoard
        styled = LightningBoard(board, script_args, seed)
    elif board.kind == "megatron":
        from fakerun.tensorboard.megatron import MegatronBoard
        styled = MegatronBoard(board, script_args)
    else:
        from fakerun.tensorboard.own import OwnBoard
        styled = OwnBoard(board)
    return TensorBoardSink(board, styled)
