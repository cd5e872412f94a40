"""Any other node's link: a DEALER to node 0's coordinator, as `agent-<node>`,
with heartbeats both ways and the events node 0 forwards."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import zmq

from fakerun import events as ev
from fakerun.launcher.links import BEAT_S
from fakerun.protocol.codec import decode, encode
from fakerun.protocol.keys import JobKeys, secured
from fakerun.protocol.messages import (
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
from fakerun.protocol.transport import EVENTS, POLLIN
from fakerun.world.clock import VirtualClock

CLOSE_POLL_S = 0.01
MONITOR_ENDPOINT = "inproc://fakerun-agent-%d-link"


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
            self.dropped = _monitor_event(self.monitor.recv_multipart(zmq.NOBLOCK)) == zmq.EVENT_DISCONNECTED
        return not self.dropped

    def joined(self) -> list[int]:
        return []

    def missing_nodes(self) -> list[int]:
        return []  # node 0 alone knows who has joined

    def receive(self, now: float) -> list[ev.Event]:
        events: list[ev.Event] = []
        while self.sock.get(EVENTS) & POLLIN:
            events += self._on_frame(self.sock.recv(zmq.NOBLOCK), now)
        return events

    def _on_frame(self, frame: bytes, now: float) -> list[ev.Event]:
        try:
            msg = decode(frame)
        except ProtocolError:
            self.bad_frames += 1
            return []
        self._heard = now
        if isinstance(msg, Welcome):
            self.welcomed = True
            self._clock.reach(msg.now, anchor=True)  # node 0's clock is the run's: ours goes on from it
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
            self._clock.reach(when)
        if isinstance(event, ev.RendezvousComplete):
            self.ready = True
        elif isinstance(event, ev.Step):
            self.steps = event.step
        return event

    def tick(self, now: float) -> list[ev.Event]:
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

    def _lose(self, reason: str, detail: str) -> list[ev.Event]:
        if self.lost:
            return []
        self.lost = True
        return [ev.NodeLost(0, "", reason, detail, self._clock(), reported_by=self.node)]

    def next_deadline(self) -> float | None:
        if self.acked and self.monitor is not None:
            return self._close_check_at  # until node 0 lets go of us (bounded by our linger)
        if self.lost or not self.welcomed:
            return self._beat_at
        return min(self._beat_at, self._heard + self.timeout_s)

    def request_stop(self) -> list[ev.Event]:
        self._report("stopping")
        return []

    def local_failure(self, detail: str) -> list[ev.Event]:
        self._report("failed", detail)
        return []

    def finished(self) -> None:
        self.finishing = True
        self._report("done")

    def flush_output(self) -> list[ev.Event]:
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


def _monitor_event(frames: list[bytes]) -> int:
    """A monitor message's event (its first frame: a 16-bit event, a 32-bit
    value). Read here, as zmq.utils.monitor does: importing that module
    imports asyncio, a tenth of every launcher's start-up."""
    return struct.unpack("=hi", frames[0][:6])[0]
