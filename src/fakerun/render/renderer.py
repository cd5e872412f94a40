"""Renderers: events in, text out. They never see sockets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fakerun import events as ev
from fakerun.render import styles
from fakerun.render.console import ConsoleSink
from fakerun.render.jsonl import JsonlSink
from fakerun.render.lines import DEFAULT_COLUMNS, MAX_COLUMNS
from fakerun.render.logfiles import RankLogFiles
from fakerun.render.metrics import MetricsFile
from fakerun.render.sinks import EventSink, LineSink, OutputClosed, SinkFailed
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world.clock import local_now, parse_start

__all__ = ["OutputClosed", "Renderer", "build_renderer", "resolve_output"]

@dataclass(frozen=True)
class OutputState:
    """What became of the output, as the launcher must act on it."""

    closed: bool = False  # a reader went away: every console sink is gone (the job ends, exit 141)
    failure: str = ""  # a file we had to write and could not (one line)


class Renderer:
    """One formatter feeding every line sink, plus raw-event sinks.

    A sink whose reader went away (EPIPE), or whose file cannot be written,
    is dropped; flush() says so, and the launcher shuts the job down instead
    of dying mid-write."""

    def __init__(self, formatter: EventFormatter, line_sinks: list[LineSink],
                 event_sinks: list[EventSink]) -> None:
        self.formatter = formatter
        self.line_sinks = line_sinks
        self.event_sinks = event_sinks
        self.output_closed = False
        self.failure = ""  # a file we had to write and could not (one line)
        self._state = OutputState()
        self.logs: RankLogFiles | None = None
        self.settings = formatter.settings  # which rank streams the log files get
        self._pending = False  # anything emitted since the last flush

    def emit(self, event: ev.Event) -> None:
        self._pending = True
        self._each(self.event_sinks, lambda sink: sink.event(event))
        lines = self.formatter.lines(event)
        if lines:
            if self.logs is not None:
                self._to_logs(lambda logs: logs.write(lines))
            self._each(self.line_sinks, lambda sink: sink.write(lines))

    def flush(self, force: bool = False) -> OutputState:
        """Called once per launcher loop pass: a no-op when nothing was emitted,
        except for views that redraw on their own clock (the live footer)."""
        if self._pending and self.logs is not None:
            self._to_logs(lambda logs: logs.flush())
        due = self._pending or force
        self._each(self.event_sinks, lambda sink: sink.flush(), only=lambda sink: due or sink.clocked)
        self._each(self.line_sinks, lambda sink: sink.flush(),
                   only=lambda sink: due or sink.animated)
        self._pending = False
        if self._state.closed != self.output_closed or self._state.failure != self.failure:
            self._state = OutputState(self.output_closed, self.failure)  # made once a change, not a pass
        return self._state

    def fail(self, message: str) -> None:
        """A file the launcher itself had to write (a checkpoint) could not
        be: reported like a sink's, the first failure wins."""
        self.failure = self.failure or message

    def attach(self, sink: EventSink) -> None:
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
        self.logs = RankLogFiles({r: (Path(o), Path(e)) for r, (o, e) in paths.items()}, where, self.settings)

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
            sink.close()

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
            sinks[:] = [s for s in sinks if not s.console]


def resolve_output(requested: str, stdout: TextIO, environ: dict[str, str]) -> str:
    """auto: the rich view on a real terminal, plain text anywhere else."""
    if requested != "auto":
        return requested
    tty = hasattr(stdout, "isatty") and stdout.isatty()
    return "rich" if tty and environ.get("TERM", "") != "dumb" else "plain"


def width_of(stdout: TextIO, environ: dict[str, str]) -> int:
    """The columns the layout may take: $COLUMNS, else the terminal's, else
    DEFAULT_COLUMNS; never more than MAX_COLUMNS."""
    if environ.get("COLUMNS", "").isdigit():
        return min(MAX_COLUMNS, int(environ["COLUMNS"]))
    try:
        if stdout.isatty():
            return min(MAX_COLUMNS, os.get_terminal_size(stdout.fileno()).columns)
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_COLUMNS


def build_renderer(config: Any, stdout: TextIO, stderr: TextIO, environ: dict[str, str]) -> Renderer:
    mode = resolve_output(config.output, stdout, environ)
    tz = parse_start(config.start_time)[1] if config.start_time else local_now()[1]
    # Teed rank lines wear their prefix ("[default7]:", or the role's, or the template's) on the console.
    s, last = config.settings, config.topology.nproc_per_node - 1
    teed = any(s.tee_of(local) for local in config.topology.local_ranks())
    prefix = len(s.prefix(config.topology.global_rank(last), last)) if teed else 0
    width = max(60, width_of(stdout, environ) - prefix)
    formatter = EventFormatter(width, tz, styles.renderer_for(config.style, width, tz), config.identity,
                               config.settings)
    node_ranks = config.agents.node_ranks()  # this agent's ranks: a node's, or srun's task's one
    nproc = config.topology.nproc_per_node
    resumed = config.resume_from is not None
    # Node 0 owns the job's metrics file, as rank 0 owns a training script's
    # logging: the other nodes, whose view of the run is node 0's relayed,
    # would write every line again (and truncate what node 0 wrote).
    owner = config.metrics_file is not None and config.agents.node_rank == 0
    files: list[Any] = [MetricsFile(config.metrics_file, append=resumed)] if owner else []
    if mode == "jsonl":
        return Renderer(formatter, [ConsoleSink(stdout, stderr, nproc, node_ranks, show_ranks=False)],
                        [JsonlSink(stdout), *files])
    if mode == "rich":
        from fakerun.render.rich_view import RichView  # rich is imported only when it is used

        view = RichView(stdout, stderr, nproc, node_ranks, environ, settings=config.settings)
        return Renderer(formatter, [view], [view, *files])
    console = ConsoleSink(stdout, stderr, nproc, node_ranks, settings=config.settings)
    return Renderer(formatter, [console], files)
