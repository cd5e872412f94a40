"""Where an agent's events come from: the coordinator itself (node 0), or a
link to node 0's coordinator (every other node).

Both hubs give the launcher the same small surface: a socket to poll,
`receive` and `tick` returning domain events, and the agent's own news
(stopping, a local failure, done). Node 0's hub forwards the coordinator's
events to the other agents, so each node renders its own view of one run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from fakerun import events as ev
from fakerun.coordinator.core import Coordinator, Outcome, handle_frames
from fakerun.protocol.codec import Encoded, decode, encode
from fakerun.protocol.keys import Gate, JobKeys, secured
from fakerun.protocol.messages import (
    MAX_MESSAGE_BYTES,
    TRANSPORT_MAX_BYTES,
    Ack,
    AgentHello,
    AgentReport,
    Events,
    ProtocolError,
    Refused,
    Welcome,
    agent_routing_id,
)
from fakerun.protocol.transport import EVENTS, POLLIN, RouterSocket
from fakerun.world.clock import VirtualClock

BEAT_S = 1.0  # heartbeats between agents and the coordinator
FORWARD_EVERY_S = 0.1  # events for the other agents go out in batches: a frame per collective
# would wake every agent for every collective, which costs the theatre more than all its ranks
HINT_AFTER_S = 3.0  # node 0 says what to run on missing nodes after this long
CLOSE_POLL_S = 0.01
MONITOR_ENDPOINT = "inproc://fakerun-agent-%d-link"
BATCH_BYTES = MAX_MESSAGE_BYTES // 2  # an Events frame's items, before msgpack's framing


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

    def receive(self, now: float) -> list[Any]:
        self._now = now
        events: list[Any] = []
        for frames in self.sock.drain():
            outcome = handle_frames(self.core, frames, now)
            if outcome.replies or outcome.events:  # most contributions only wait for the others
                events += self._apply(outcome)
        return events

    def tick(self, now: float) -> list[Any]:
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

    def request_stop(self) -> list[Any]:
        self.core.stopping = True
        return []

    def local_failure(self, detail: str) -> list[Any]:
        if self.core.job.nnodes == 1:
            return []
        return self._apply(self.core.node_failed(0, "failed", detail))

    def finished(self) -> None:
        return None

    def flush_output(self) -> list[Any]:
        return self._apply(Outcome(events=self.core.flush_output())) + self._count_refused()

    def rejected(self) -> dict[str, int]:
        return dict(self.core.rejected)

    def _count_refused(self) -> list[Any]:
        """Handshakes refused since last asked (each tick, and at the end)."""
        refused = self.sock.refused()
        if not refused:
            return []
        return self._apply(self.core.reject("handshake", b"a peer without the job's key", refused))

    def _apply(self, outcome: Outcome) -> list[Any]:
        if self.core.agents and any(isinstance(msg, Ack) for _, msg in outcome.replies):
            self._send()  # what that agent has not seen yet goes before its Ack
        for identity, msg in outcome.replies:
            self.sock.send(identity, msg)
        self._forward(outcome.events)
        return outcome.events

    def _agents(self) -> list[int]:
        return [n for n, a in self.core.agents.items() if a.state in ("alive", "stopping", "done")]

    def _forward(self, events: list[Any]) -> None:
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


class RemoteHub:
    """Any other node: a DEALER to node 0's coordinator, as `agent-<node>`."""

    def __init__(self, ctx: zmq.Context, endpoint: str, hello: AgentHello, timeout_s: float,
                 now: float, clock: VirtualClock, keys: JobKeys, await_close: bool = False) -> None:
        self.node = hello.node_rank
        self.sock = ctx.socket(zmq.DEALER)
        # --loop: after node 0's Ack we wait for its coordinator to close, or
        # our next run's ranks could greet the run that just ended.
        self.monitor = ctx.socket(zmq.PAIR) if await_close else None
        self.dropped = False
        self._close_check_at = now
        self.sock.setsockopt(zmq.IDENTITY, agent_routing_id(self.node))
        self.sock.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_MAX_BYTES)
        self.sock.setsockopt(zmq.LINGER, 500)
        # Node 0 may come up after us: retry as fast as our ranks do, or a
        # short run is over before the agent's backoff lets it in.
        self.sock.setsockopt(zmq.RECONNECT_IVL, 5)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        if secured(endpoint):
            keys.dial(self.sock)
        if self.monitor is not None:
            self.sock.monitor(MONITOR_ENDPOINT % self.node, zmq.EVENT_DISCONNECTED)
            self.monitor.connect(MONITOR_ENDPOINT % self.node)
        self.sock.connect(endpoint)
        self.hello = encode(hello)
        self.sock.send(self.hello)
        self.timeout_s = timeout_s
        self._clock = clock
        self._heard = now  # the last word from node 0
        self._beat_at = now + BEAT_S
        self.welcomed = False
        self.ready = False
        self.steps = 0
        self.lost = False
        self.bad_frames = 0
        self.finishing = self.acked = False

    @property
    def socket(self) -> zmq.Socket:
        return self.sock

    @property
    def lingering(self) -> bool:
        """Our ranks are gone, but node 0 has not yet confirmed we have every
        event. (Never welcomed, we are nothing to node 0: no ack will come,
        and waiting for one kept a Ctrl+C during the launch for 10 s.)"""
        if not self.finishing or not self.welcomed or self.lost:
            return False
        return not self.acked or self._open()

    def _open(self) -> bool:
        """Whether node 0's coordinator may still hold our connection (--loop
        only). Once it drops, we are done with it: our socket reconnecting to
        node 0's next coordinator is no business of this run's."""
        if self.monitor is None:
            return False
        while not self.dropped and self.monitor.get(EVENTS) & POLLIN:
            self.dropped = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"] == zmq.EVENT_DISCONNECTED
        return not self.dropped

    def joined(self) -> list[int]:
        return []

    def missing_nodes(self) -> list[int]:
        return []  # node 0 alone knows who has joined

    def receive(self, now: float) -> list[Any]:
        events: list[Any] = []
        while self.sock.get(EVENTS) & POLLIN:
            events += self._on_frame(self.sock.recv(zmq.NOBLOCK), now)
        return events

    def _on_frame(self, frame: bytes, now: float) -> list[Any]:
        try:
            msg = decode(frame)
        except ProtocolError:
            self.bad_frames += 1
            return []
        self._heard = now
        if isinstance(msg, Welcome):
            self.welcomed = True
        elif isinstance(msg, Ack):
            self.acked = True
        elif isinstance(msg, Refused):
            return self._lose("refused", f"node 0 refused this node: {msg.reason}")
        elif isinstance(msg, Events):
            return [e for e in (self._event(item) for item in msg.items) if e is not None]
        return []

    def _event(self, item: str) -> Any:
        try:
            event = ev.from_dict(json.loads(item))
        except (ValueError, ev.EventError):
            self.bad_frames += 1
            return None
        when = getattr(event, "time", None)
        if isinstance(when, float):  # node 0's clock is the run's: ours follows it
            self._clock.advance(when - self._clock.now)
        if isinstance(event, ev.RendezvousComplete):
            self.ready = True
        elif isinstance(event, ev.Step):
            self.steps = event.step
        return event

    def tick(self, now: float) -> list[Any]:
        self._close_check_at = now + CLOSE_POLL_S
        if now >= self._beat_at:
            self._beat_at = now + BEAT_S
            if self.welcomed:
                self._report("alive")
            else:  # node 0 answers a repeated hello alike
                with contextlib.suppress(zmq.Again):
                    self.sock.send(self.hello, zmq.NOBLOCK)
        # Until node 0 first answers it may simply not be up yet: the
        # rendezvous timeout (the launcher's) decides then, as torchrun's
        # agents wait for the store, not the node timeout.
        if self.welcomed and not self.lost and now - self._heard >= self.timeout_s:
            return self._lose("silent", f"no word from node 0 for {self.timeout_s:g} seconds "
                                        "since it last answered")
        return []

    def _lose(self, reason: str, detail: str) -> list[Any]:
        if self.lost:
            return []
        self.lost = True
        return [ev.NodeLost(0, "", reason, detail, self._clock.now, reported_by=self.node)]

    def next_deadline(self) -> float | None:
        if self.acked and self.monitor is not None:
            return self._close_check_at  # until node 0 lets go of us (bounded by our linger)
        if self.lost or not self.welcomed:
            return self._beat_at
        return min(self._beat_at, self._heard + self.timeout_s)

    def request_stop(self) -> list[Any]:
        self._report("stopping")
        return []

    def local_failure(self, detail: str) -> list[Any]:
        self._report("failed", detail)
        return []

    def finished(self) -> None:
        self.finishing = True
        self._report("done")

    def flush_output(self) -> list[Any]:
        return []

    def rejected(self) -> dict[str, int]:
        return {"bad-frame": self.bad_frames} if self.bad_frames else {}

    def _report(self, state: str, detail: str = "") -> None:
        # Node 0 unreachable and our queue full: the timeout decides, not this.
        with contextlib.suppress(zmq.Again):
            self.sock.send(encode(AgentReport(self.node, state, detail)), zmq.NOBLOCK)

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=500)
