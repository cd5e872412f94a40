"""Where an agent's events come from: the coordinator itself (node 0,
local_link.py), or a link to node 0's coordinator (every other node,
remote_link.py). Both give the job loop the same small surface, `Hub`.
Node 0's link forwards the coordinator's events to the other agents, so each
node renders its own view of one run.
"""

from __future__ import annotations

from typing import Any, Protocol

from fakerun import events as ev

BEAT_S = 1.0  # heartbeats between agents and the coordinator


class Hub(Protocol):
    """This node's link to the job's coordinator, as the job loop uses it:
    node 0 hosts the coordinator (LocalHub), every other node reaches it
    over TCP (RemoteHub). Every method returns the events to show."""

    @property
    def socket(self) -> Any:
        """What the loop polls for the link's input."""

    @property
    def ready(self) -> bool:
        """The rendezvous is complete."""

    @property
    def steps(self) -> int: ...

    @property
    def lingering(self) -> bool:
        """Other nodes still use the coordinator: this node must not leave yet."""

    def joined(self) -> list[int]: ...

    def missing_nodes(self) -> list[int]: ...

    def receive(self, now: float) -> list[ev.Event]: ...

    def tick(self, now: float) -> list[ev.Event]: ...

    def next_deadline(self) -> float | None: ...

    def request_stop(self) -> list[ev.Event]: ...

    def local_failure(self, detail: str) -> list[ev.Event]: ...

    def finished(self) -> None: ...

    def flush_output(self) -> list[ev.Event]: ...

    def rejected(self) -> dict[str, int]: ...

    def close(self) -> None: ...
