"""Renderers: events in, text out. They never see sockets."""

from __future__ import annotations

from typing import Any, Protocol

from .console import OutputClosed
from .lines import Line
from .torchrun import TorchrunFormatter

__all__ = ["OutputClosed", "Renderer", "LineSink", "EventSink"]


class LineSink(Protocol):
    def write(self, lines: list[Line]) -> None: ...
    def flush(self) -> None: ...


class EventSink(Protocol):
    def event(self, event: Any) -> None: ...
    def flush(self) -> None: ...


class Renderer:
    """One formatter feeding every line sink, plus raw-event sinks.

    A sink whose reader went away (EPIPE) is dropped and `output_closed` is
    set; the launcher then shuts the job down instead of dying mid-write."""

    def __init__(self, formatter: TorchrunFormatter, line_sinks: list[Any],
                 event_sinks: list[Any]) -> None:
        self.formatter = formatter
        self.line_sinks = line_sinks
        self.event_sinks = event_sinks
        self.output_closed = False

    def emit(self, event: Any) -> None:
        self._each(self.event_sinks, lambda sink: sink.event(event))
        lines = self.formatter.lines(event)
        if lines:
            self._each(self.line_sinks, lambda sink: sink.write(lines))

    def flush(self) -> None:
        self._each(self.event_sinks, lambda sink: sink.flush())
        self._each(self.line_sinks, lambda sink: sink.flush())

    def _each(self, sinks: list[Any], action: Any) -> None:
        for sink in list(sinks):
            try:
                action(sink)
            except OutputClosed:
                sinks.remove(sink)
                self.output_closed = True
