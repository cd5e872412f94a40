"""What a framework's SummaryWriter is asked to do, as plain data: each
style's board (hf.py, megatron.py, lightning.py, own.py) turns the run's
events into these, and the sink (sink.py) carries them out on event files.
So a board is tested without protobuf, and the files come from one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Open:
    """`SummaryWriter(log_dir=logdir)`: a new event file there, at `time`."""

    logdir: str
    time: float


@dataclass(frozen=True)
class Scalar:
    """`add_scalar(tag, value, step)`; step None: add_summary with no step."""

    tag: str
    value: float
    step: int | None
    time: float


@dataclass(frozen=True)
class Text:
    """`add_text(tag, text, step)`: the summary's tag is `<tag>/text_summary`."""

    tag: str
    text: str
    step: int | None
    time: float


@dataclass(frozen=True)
class Hparams:
    """torch.utils.tensorboard.summary.hparams(params, metrics)'s three
    summaries (experiment, session start, session end), added with no step."""

    params: dict[str, Any]
    metrics: tuple[str, ...]
    time: float


@dataclass(frozen=True)
class Close:
    """`writer.close()`: the file is complete; a later Open starts another."""

    time: float


Write = Open | Scalar | Text | Hparams | Close
