"""Node 0's link: the coordinator itself, hosted in the agent, behind the
job's ROUTER; it forwards the coordinator's events to the other nodes'
agents in batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import zmq

from fakerun import events as ev
from fakerun.coordinator.core import Coordinator, Outcome, handle_frames
from fakerun.launcher.links import BEAT_S
from fakerun.protocol.codec import Encoded, encode
from fakerun.protocol.keys import Gate, JobKeys, secured
from fakerun.protocol.messages import (
    MAX_MESSAGE_BYTES,
    Ack,
    Events,
    agent_routing_id,
)
from fakerun.protocol.transport import RouterSocket

FORWARD_EVERY_S = 0.1  # events for the other agents go out in batches: a frame per collective
# would wake every agent for every collective, which costs the theatre more than all its ranks
HINT_AFTER_S = 3.0  # node 0 says what to run on missing nodes after this long
BATCH_BYTES = MAX_MESSAGE_BYTES // 2  # an Events frame's items, before msgpack's framing


class LocalHub:
    """Node 0: the coordinator, its socket, and the other nodes' agents."""

    def __init__(self, ctx: zmq.Context, endpoints: list[str], core: Coordinator,
                 hint: Callable[[list[int]], list[str]], now: float, keys: JobKeys) -> None:
        # The gate answers before the first handshake can ask it.
        self.gate = Gate(ctx, keys) if any(secured(e) for e in endpoints) else None
        try:
            self.sock = RouterSocket(ctx, endpoints, keys)
        except zmq.ZMQError:  # e.g. the port is taken: the gate's thread must not outlive us
            if self.gate is not None:
                self.gate.close()
            raise
        self.core = core
        self._hint = hint
        self._hint_at: float | None = now + HINT_AFTER_S if core.job.nnodes > 1 else None
        self._beat_at = now + BEAT_S
        self._outbox: list[str] = []  # events for the other agents, JSON, not sent yet
        self._send_at: float | None = None
        self._now = now

    @property
    def socket(self) -> zmq.Socket:
        return self.sock.sock

    @property
    def ready(self) -> bool:
        return self.core.ready

    @property
    def steps(self) -> int:
        return self.core.steps

    @property
    def lingering(self) -> bool:
        """Other nodes still use the coordinator: node 0 must not leave yet."""
        return self.core.waiting_for_agents

    def joined(self) -> list[int]:
        return sorted(self.core.hellos)

    def missing_nodes(self) -> list[int]:
        return self.core.missing_nodes()

    def receive(self, now: float) -> list[ev.Event]:
        self._now = now
        events: list[ev.Event] = []
        for frames in self.sock.drain():
            outcome = handle_frames(self.core, frames, now)
            if outcome.replies or outcome.events:  # most contributions only wait for the others
                events += self._apply(outcome)
        return events

    def tick(self, now: float) -> list[ev.Event]:
        self._now = now
        events = self._apply(self.core.tick(now))
        events += self._count_refused()
        if self._hint_at is not None and now >= self._hint_at:
            missing = self.core.missing_nodes()
            self._hint_at = None
            if missing:
                events += self._apply(Outcome(events=[ev.WaitingForNodes(
                    missing, self._hint(missing), self.core.clock_now())]))
        if now >= self._beat_at or (self._send_at is not None and now >= self._send_at):
            self._send()
        return events

    def next_deadline(self) -> float | None:
        times = [t for t in (self.core.next_deadline(), self._hint_at, self._send_at) if t is not None]
        if self.core.agents:
            times.append(self._beat_at)
        return min(times) if times else None

    def request_stop(self) -> list[ev.Event]:
        self.core.stopping = True
        return []

    def local_failure(self, detail: str) -> list[ev.Event]:
        if self.core.job.nnodes == 1:
            return []
        return self._apply(self.core.node_failed(0, "failed", detail))

    def finished(self) -> None:
        return None

    def flush_output(self) -> list[ev.Event]:
        return self._apply(Outcome(events=self.core.flush_output())) + self._count_refused()

    def rejected(self) -> dict[str, int]:
        return dict(self.core.rejected)

    def _count_refused(self) -> list[ev.Event]:
        """Handshakes refused since last asked (each tick, and at the end)."""
        refused = self.sock.refused()
        if not refused:
            return []
        return self._apply(self.core.reject("handshake", b"a peer without the job's key", refused))

    def _apply(self, outcome: Outcome) -> list[ev.Event]:
        if self.core.agents and any(isinstance(msg, Ack) for _, msg in outcome.replies):
            self._send()  # what that agent has not seen yet goes before its Ack
        for identity, msg in outcome.replies:
            self.sock.send(identity, msg)
        self._forward(outcome.events)
        return outcome.events

    def _agents(self) -> list[int]:
        # A failed node still hears the run: its own ranks' last words come after its failure.
        return [n for n, a in self.core.agents.items() if a.state in ("alive", "stopping", "done", "failed")]

    def _forward(self, events: list[ev.Event]) -> None:
        """Queued for the next batch (at most FORWARD_EVERY_S from now)."""
        if not self._agents():
            return
        self._outbox += [json.dumps(ev.to_dict(e), separators=(",", ":")) for e in events if ev.forwarded(e)]
        if self._outbox and self._send_at is None:
            self._send_at = self._now + FORWARD_EVERY_S

    def _send(self) -> None:
        """The batch, one encoding for every agent; an empty batch is a
        heartbeat. Either way it is the next heartbeat's start."""
        items, self._outbox, self._send_at = self._outbox, [], None
        self._beat_at = self._now + BEAT_S
        agents = self._agents()
        if not agents:
            return
        for batch in batches(items):
            frame = Encoded(encode(Events(batch)))
            for node in agents:
                self.sock.send(agent_routing_id(node), frame)

    def close(self) -> None:
        if self._outbox:
            self._send()
        self.sock.close()
        if self.gate is not None:
            self.gate.close()


def batches(items: list[str]) -> Iterator[list[str]]:
    """`items` in order, in batches whose frames stay within the protocol's
    limit however fast the run goes (an empty list stays one heartbeat)."""
    batch: list[str] = []
    size = 0
    for item in items:
        if batch and size + len(item) > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 8  # msgpack's own bytes per string, with room to spare
    yield batch
