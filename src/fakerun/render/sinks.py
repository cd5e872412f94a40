"""Where rendered output goes: the two kinds of sink the Renderer feeds.

A line sink takes the formatted lines (the console, the live view, the rank
log files); an event sink takes the events themselves (JSONL, the metrics
file, the live view's footer, the smi snapshot). A sink that can no longer
write raises one of the two errors below and the Renderer drops it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from fakerun.errors import FakerunError

if TYPE_CHECKING:
    from fakerun.events import Event
    from fakerun.render.lines import Line


class OutputClosed(FakerunError):
    """The reader went away (e.g. `fakerun | head -1`)."""


class SinkFailed(FakerunError):
    """A file we must write could not be written; the message is one line."""


class Sink(Protocol):
    # On the terminal: when a reader goes away every console sink goes with
    # it, so the job shuts down quietly (exit 141).
    console: bool

    def flush(self) -> None: ...

    def close(self) -> None: ...


class LineSink(Sink, Protocol):
    # Flushed on every pass of the job loop, not only after new output: it
    # redraws on its own clock (the live view's footer).
    animated: bool

    def write(self, lines: Iterable[Line]) -> None: ...


class EventSink(Sink, Protocol):
    # Flushed on every pass of the job loop too: it shows the run's clock,
    # which moves between events (a paced run's `fakerun smi` state).
    clocked: bool

    def event(self, event: Event) -> None: ...
