"""What the coordinator knows of its job, and what each of its steps returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fakerun import events as ev
from fakerun.world.physics import Bounds


@dataclass(frozen=True)
class JobSpec:
    run_id: str
    token: str
    world_size: int
    nnodes: int = 1
    digest: str = ""  # RunConfig.digest(): what every node's agent must agree on
    node_timeout_s: float = 30.0  # an agent silent this long is lost
    # RunConfig.bounds: the largest figures a rank of this plan reports (the
    # plan refused before the launch what no job could have); beyond: no rank of ours.
    bounds: Bounds = field(kw_only=True)
    host: str = field(default="", kw_only=True)  # the coordinator's own node's name (node 0's)


@dataclass(slots=True)  # one per message handled
class Outcome:
    replies: list[tuple[bytes, Any]] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)

    def extend(self, other: Outcome) -> Outcome:
        self.replies.extend(other.replies)
        self.events.extend(other.events)
        return self
