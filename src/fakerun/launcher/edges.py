"""What the job loop reaches beyond itself, declared: the launcher's I/O, the
renderer and signal inbox as the loop uses them, and the edges it crosses
(forking the ranks, zmq, polling, this node's link), which tests replace
with fakes (tests/unit/test_job_loop.py)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import zmq

from fakerun import events as ev
from fakerun.config.options import RunConfig
from fakerun.launcher.links import Hub
from fakerun.launcher.supervisor import Workers
from fakerun.launcher.workers import WorkerGroup
from fakerun.rank.process import RankSpec
from fakerun.render.renderer import OutputState


@dataclass
class IO:
    """The launcher's edges, injected so tests and the API can replace them."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    monotonic: Callable[[], float] = time.monotonic
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


class View(Protocol):
    """What the job needs of its renderer (render.renderer.Renderer)."""

    def emit(self, event: ev.Event) -> None: ...

    def flush(self, force: bool = False) -> OutputState: ...

    def fail(self, message: str) -> None: ...

    def open_rank_logs(self, paths: dict[int, tuple[str, str]], where: str = ...) -> None: ...

    def close_rank_logs(self) -> None: ...


class Served(Protocol):
    """Sockets the loop polls and serves beside its own, between its passes
    (dcgm.server.MetricsServer): no thread of their own."""

    def poll_items(self) -> list[tuple[Any, int]]: ...

    def serve(self, ready: dict[Any, int], now: float) -> None: ...


class Inbox(Protocol):
    """The signals that came (system.signals.SignalInbox)."""

    def fileno(self) -> int: ...

    def take(self) -> list[int]: ...


@dataclass
class Edges:
    """What a job reaches beyond this process. `connect(ctx, endpoints)`
    makes this node's link to the coordinator (None: the real one)."""

    fork: Callable[[list[RankSpec], RunConfig], Workers] = WorkerGroup.fork
    context: Callable[[], Any] = zmq.Context
    poll: Callable[[list[tuple[Any, int]], int], list[tuple[Any, int]]] = zmq.zmq_poll
    connect: Callable[[Any, list[str]], Hub] | None = None
