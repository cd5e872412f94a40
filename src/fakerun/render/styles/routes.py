"""The dispatch every style's renderer shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakerun import events as ev
from fakerun.world.identity import Identity


class EventRoutes:
    """A script renderer's dispatch: it remembers the run's identity, and
    routes every other event to its handler once the identity is known."""

    ident: Identity | None = None
    master_port: int = 29500
    launch: ev.RunStarted | None = None  # the launch line, for a style that echoes it
    # What the script does with its NCCL process group, which decides the
    # warnings ProcessGroupNCCL prints (render/torchrun/formatter.py). True
    # only where the style's script is known to: a style left False prints none.
    barrier_first: bool = False  # its first collective is a barrier() with no device_ids
    leaves_process_group: bool = False  # it exits without destroy_process_group()
    _handlers: dict[type, Callable[[Any], Any]]

    def launched(self, launch: ev.RunStarted) -> None:
        self.launch, self.master_port = launch, launch.master_port

    def routed(self, event: Any) -> Any:
        if isinstance(event, ev.RunIdentity):
            self.ident = event.identity
            return None
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None and self.ident is not None else None
