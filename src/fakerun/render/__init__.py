"""Renderers: events in, text out. They never see sockets."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, TextIO

from ..clock import local_now, parse_start
from .console import ConsoleSink, OutputClosed, RankStreams
from .jsonl import JsonlSink
from .logfiles import RankLogFiles
from .metrics import MetricsFile, SinkFailed
from .script import ScriptLines
from .torchrun import TorchrunFormatter

__all__ = ["OutputClosed", "Renderer", "build_renderer", "resolve_output"]

DEFAULT_WIDTH = 100


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
        self.failure = ""  # a file we had to write and could not (one line)
        self.logs: RankLogFiles | None = None
        self._pending = False  # anything emitted since the last flush

    @property
    def binary(self) -> str:
        return self.formatter.binary

    def emit(self, event: Any) -> None:
        self._pending = True
        self._each(self.event_sinks, lambda sink: sink.event(event))
        lines = self.formatter.lines(event)
        if lines:
            if self.logs is not None:
                self._to_logs(lambda logs: logs.write(lines))
            self._each(self.line_sinks, lambda sink: sink.write(lines))

    def flush(self, force: bool = False) -> None:
        """Called once per launcher loop pass: a no-op when nothing was emitted,
        except for views that redraw on their own clock (the live footer)."""
        if self._pending and self.logs is not None:
            self._to_logs(lambda logs: logs.flush())
        if self._pending or force:
            self._each(self.event_sinks, lambda sink: sink.flush())
        due = self._pending or force
        self._each(self.line_sinks, lambda sink: sink.flush(),
                   only=lambda sink: due or getattr(sink, "animated", False))
        self._pending = False

    def attach(self, sink: Any) -> None:
        """An event sink that lives for one run: it replaces (and closes) the
        previous run's sink of its kind."""
        for old in [s for s in self.event_sinks if type(s) is type(sink)]:
            old.close()
            self.event_sinks.remove(old)
        self.event_sinks.append(sink)

    def open_rank_logs(self, paths: dict[int, tuple[str, str]], where: str = "the rank logs") -> None:
        """`where` names the files in an error message. SinkFailed if they
        cannot be opened (nothing has started yet: the caller says why)."""
        self.close_rank_logs()
        self.logs = RankLogFiles({r: (Path(o), Path(e)) for r, (o, e) in paths.items()}, where)

    def close_rank_logs(self) -> None:
        if self.logs is not None:
            self._to_logs(lambda logs: logs.close())
            self.logs = None

    def _to_logs(self, action: Any) -> None:
        """A rank log that cannot be written (a full disk) is a failure like
        the metrics file's: reported once, then the logs are dropped."""
        try:
            action(self.logs)
        except SinkFailed as exc:
            self.logs = None
            self.failure = self.failure or str(exc)

    def close(self) -> None:
        self.close_rank_logs()
        for sink in [*self.line_sinks, *self.event_sinks]:
            getattr(sink, "close", lambda: None)()

    def _each(self, sinks: list[Any], action: Any, only: Any = None) -> None:
        for sink in list(sinks):
            if sink not in sinks or (only is not None and not only(sink)):
                continue  # dropped meanwhile (_closed), or not due
            try:
                action(sink)
            except OutputClosed:
                self._closed()
            except SinkFailed as exc:
                sinks.remove(sink)
                self.failure = self.failure or str(exc)


    def _closed(self) -> None:
        """A reader went away: every sink on the console goes, not just the
        one that noticed, so the job shuts down quietly (exit 141). Under
        --output jsonl the events' stdout is gone while stderr, where the
        torchrun lines go, would still print "Sending process N closing
        signal" for the teardown."""
        self.output_closed = True
        for sinks in (self.line_sinks, self.event_sinks):
            sinks[:] = [s for s in sinks if not getattr(s, "console", False)]


def resolve_output(requested: str, stdout: TextIO, environ: dict[str, str]) -> str:
    """auto: the rich view on a real terminal, plain text anywhere else."""
    if requested != "auto":
        return requested
    tty = hasattr(stdout, "isatty") and stdout.isatty()
    return "rich" if tty and environ.get("TERM", "") != "dumb" else "plain"


def width_of(stdout: TextIO, environ: dict[str, str]) -> int:
    if environ.get("COLUMNS", "").isdigit():
        return int(environ["COLUMNS"])
    try:
        if stdout.isatty():
            return os.get_terminal_size(stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_WIDTH


# Per style: the module (in this package) and class rendering the script's output.
SCRIPT_RENDERERS = {"hf": ("hf", "HfLines"), "megatron": ("megatron", "MegatronLines"),
                    "deepspeed": ("deepspeed", "DeepSpeedLines"),
                    "lightning": ("lightning", "LightningLines")}


def script_for(style: Any, width: int, tz: Any) -> Any:
    """The renderer of the training script's own output, in `style`'s conventions
    (imported only when a run uses it)."""
    if style.name not in SCRIPT_RENDERERS:
        return ScriptLines(width, tz)
    module, cls = SCRIPT_RENDERERS[style.name]
    return getattr(importlib.import_module(f".{module}", __package__), cls)(width, tz)


def build_renderer(config: Any, stdout: TextIO, stderr: TextIO, environ: dict[str, str]) -> Renderer:
    mode = resolve_output(config.output, stdout, environ)
    tz = parse_start(config.start_time)[1] if config.start_time else local_now()[1]
    # Rank lines wear an 11-character "[defaultN]:" prefix on the console.
    width = max(60, width_of(stdout, environ) - 11)
    formatter = TorchrunFormatter(width, tz, script_for(config.style, width, tz), config.identity)
    node_ranks = config.topology.node_ranks()
    nproc = config.topology.nproc_per_node
    resumed = config.resume_from is not None
    # Node 0 owns the job's metrics file, as rank 0 owns a training script's
    # logging: the other nodes, whose view of the run is node 0's relayed,
    # would write every line again (and truncate what node 0 wrote).
    owner = config.metrics_file is not None and config.topology.node_rank == 0
    files: list[Any] = [MetricsFile(config.metrics_file, append=resumed)] if owner else []
    if mode == "jsonl":
        return Renderer(formatter, [ConsoleSink(stdout, stderr, nproc, node_ranks, show_ranks=False)],
                        [JsonlSink(stdout), *files])
    if mode == "rich":
        from .rich_view import RichView  # rich is imported only when it is used

        view = RichView(stdout, stderr, nproc, node_ranks, environ)
        return Renderer(formatter, [view], [view, *files])
    streams = RankStreams(config.tee, config.redirects, config.local_ranks_filter)
    return Renderer(formatter, [ConsoleSink(stdout, stderr, nproc, node_ranks, streams=streams)], files)
