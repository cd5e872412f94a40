"""The coordinator: rendezvous, real blocking collectives, watchdog, ordering.

`Coordinator` is the pure core: `handle(peer, frame, now)` (peer: the routing
id the frame came from) and `tick(now)` return an `Outcome` (replies to send,
events to render) and never touch a socket or a clock; the zmq edge is
protocol.transport.RouterSocket, and node 0's link (launcher/local_link.py)
drives both.

Ordering: lines a rank writes itself are held until the next point where
every rank is synchronised (a completed collective) and released in rank
order, so the interleaving on screen is decided here, not by the scheduler.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Any

from fakerun import events as ev
from fakerun.coordinator.agents import AgentLink, AgentSide
from fakerun.coordinator.collective import Fingerprint, PendingCollective, Watchdog
from fakerun.coordinator.job import JobSpec, Outcome
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.protocol import (
    Abort,
    Ack,
    Contribute,
    Encoded,
    Goodbye,
    Hello,
    Output,
    ProtocolError,
    Refused,
    Telemetry,
    Welcome,
    agent_routing_id,
    decode,
    encode_release,
    rank_routing_id,
    tags,
)
from fakerun.world import physics as sim
from fakerun.world.physics import Bounds
from fakerun.world.topology import Topology
from fakerun.world.xid import Report


class Coordinator(AgentSide):
    """The job's single ordering point (one per job, on node 0)."""

    def __init__(self, job: JobSpec, collective_timeout_s: float, wall_clock: Any,
                 timeline: Timeline | None = None, report_wall: bool = True,
                 speed: float = 1.0, stall: tuple[int, int] | None = None,
                 xid: Report | None = None) -> None:
        """`xid`: the GPU fault this attempt's rank dies of, which its node's
        kernel logs as the rank leaves with its CUDA error."""
        self.job = job
        self.xid = xid
        self.timeout_s = collective_timeout_s
        self.watchdog = Watchdog(collective_timeout_s, speed, stall)
        self._wall = wall_clock
        self.timeline = timeline
        self.report_wall = report_wall
        self.stopping = False  # the launcher got a stop signal: ask ranks to end training
        self.world = range(job.world_size)
        self._rank_ids = [rank_routing_id(r) for r in self.world]  # every release goes to all of them
        self.rejected: Counter[str] = Counter()
        self.members: dict[bytes, int] = {}
        self.hellos: dict[int, Hello] = {}
        self.ready = False
        self._departed: set[int] = set()
        self._next_seq: dict[tuple[str, int], int] = {}
        self._pending: dict[str, PendingCollective] = {}
        self._broken: set[str] = set()
        self._held: dict[int, list[Output]] = {}
        self.agents: dict[int, AgentLink] = {}
        self._agent_ids = {agent_routing_id(n): n for n in range(1, job.nnodes)}
        self.lost: set[int] = set()  # nodes that failed or went silent: no collective waits for them
        self.nproc = job.world_size // job.nnodes
        self.topology = Topology(job.nnodes, self.nproc)

    # -- entry points ---------------------------------------------------
    def handle(self, peer: bytes, frame: bytes, now: float) -> Outcome:
        try:
            msg = decode(frame)
        except ProtocolError as exc:
            return self.reject(exc.reason, peer)
        rank = self.members.get(peer)
        if type(msg) is Contribute and rank is not None and msg.rank == rank:
            return self._contribute(rank, msg, now)  # the common case first; checked there
        if isinstance(msg, Hello):
            return self._hello(peer, msg)
        if peer in self._agent_ids:
            return self._from_agent(peer, msg, now)
        if rank is None or getattr(msg, "rank", rank) != rank:
            return self.reject("not-joined" if rank is None else "rank-mismatch", peer)
        if isinstance(msg, Contribute):
            return self._contribute(rank, msg, now)
        if isinstance(msg, Output):
            return self._output(rank, msg)
        if isinstance(msg, Telemetry):
            if not _plausible(msg, self.job.bounds):
                return self.reject("out-of-range", peer)
            if self.timeline is not None:
                self.timeline.on_telemetry(msg)
            return Outcome()
        if isinstance(msg, Goodbye):
            return self._goodbye(peer, rank, msg.exitcode)
        return self.reject("unexpected-kind", peer)

    def reject(self, reason: str, peer: bytes, times: int = 1) -> Outcome:
        self.rejected[reason] += times
        count = self.rejected[reason]
        out = Outcome()
        # Report the first of each reason, then only count: a flood must not
        # become a flood of output.
        if count == times:
            out.events.append(ev.Rejected(reason, count, _printable(peer), self._wall()))
        return out

    def tick(self, now: float) -> Outcome:
        out = Outcome()
        for comm, pending in list(self._pending.items()):
            if self.watchdog.expired(pending, self.world, now):
                out.extend(self._timeout(comm, pending, now))
        for link in self.agents.values():
            if link.state in ("alive", "stopping") and now - link.last_seen >= self.job.node_timeout_s:
                out.extend(self.node_failed(link.node_rank, "silent", (
                    f"no word from node {link.node_rank} ({link.host}) for "
                    f"{self.job.node_timeout_s:g} seconds")))
        return out

    def next_deadline(self) -> float | None:
        """When tick may next have work (asked once per loop pass)."""
        wall_s = self.watchdog.wall_s
        if any(self.watchdog.hopeless(p, self.world) for p in self._pending.values()):
            wall_s = 0.0  # due now
        starts = [p.started for p in self._pending.values()]
        if not self.agents:
            return min(starts) + wall_s if starts else None
        starts += [a.last_seen for a in self.agents.values() if a.state in ("alive", "stopping")]
        return min(starts) + min(wall_s, self.job.node_timeout_s) if starts else None

    def clock_now(self) -> float:
        return self._wall()

    def flush_output(self) -> list[ev.Event]:
        """Release every held line, in rank order (used at teardown)."""
        return [self._to_event(o) for r in sorted(self._held) for o in self._held.pop(r)]

    # -- rendezvous -----------------------------------------------------
    def _hello(self, peer: bytes, msg: Hello) -> Outcome:
        problem = self._hello_problem(peer, msg)
        if problem:
            out = self.reject(problem, peer)
            out.replies.append((peer, Refused(problem)))
            return out
        self.members[peer] = msg.rank
        self.hellos[msg.rank] = msg
        return self._complete_if_ready(Outcome())

    def _complete_if_ready(self, out: Outcome) -> Outcome:
        """The world is complete once every rank and every other node's agent
        has joined (an agent that joined later would miss its ranks' start)."""
        if self.ready or len(self.hellos) < self.job.world_size or self.missing_nodes():
            return out
        # Announced together, in rank order: arrival order is the scheduler's.
        self.ready = True
        ranks = sorted(self.hellos)
        out.events.extend(ev.RankStarted(r, h.local_rank, h.node_rank, h.pid, h.env)
                          for r, h in sorted(self.hellos.items()))
        out.events.append(ev.RendezvousComplete(
            self.job.world_size, ranks, [self.hellos[r].pid for r in ranks]))
        # The ranks' work counts from here: they pace it from this moment.
        now = self.timeline.clock.rebase() if self.timeline is not None else self._wall()
        welcome = Welcome(self.job.world_size, now)
        out.replies.extend((rank_routing_id(r), welcome) for r in ranks)
        return out

    def _hello_problem(self, peer: bytes, msg: Hello) -> str:
        if msg.run_id != self.job.run_id:
            return "wrong-run-id"
        if not hmac.compare_digest(msg.token.encode(), self.job.token.encode()):
            return "wrong-token"
        if msg.rank not in self.world or peer != rank_routing_id(msg.rank):
            return "bad-rank"
        if msg.rank in self.hellos or self.ready:
            return "duplicate-rank"
        return ""

    # -- collectives ----------------------------------------------------
    def _contribute(self, rank: int, msg: Contribute, now: float) -> Outcome:
        if not self.ready or rank in self._departed:
            return self.reject("out-of-phase", rank_routing_id(rank))
        if msg.op not in tags.OPS or (msg.op == "all_reduce" and msg.reduce_op not in tags.REDUCE_OPS) \
                or msg.root not in self.world:
            return self.reject("bad-op", rank_routing_id(rank))
        bounds = self.job.bounds
        if not 0.0 <= msg.sim_s <= bounds.sim_s or not 0 <= msg.numel <= bounds.numel:  # also rejects NaN
            return self.reject("out-of-range", rank_routing_id(rank))
        if self.lost and self.topology.node_of(rank) not in self.lost:
            return self._abort_for_peer(msg.comm, [rank], Fingerprint.of(msg))
        comm = msg.comm
        if comm in self._broken:
            return Outcome()
        key = (comm, rank)
        expected = self._next_seq.get(key, 1)
        pending = self._pending.get(comm)
        mine = Fingerprint.of(msg)
        if msg.seq != expected or (pending and pending.fingerprint != mine):
            return self._desync(comm, rank, mine, expected, pending)
        if pending is None:
            pending = self._pending[comm] = PendingCollective(comm, mine, rank, now, msg.tag, msg.step)
        self._next_seq[key] = expected + 1
        # When ranks arrive together, the coordinator handles them in one go
        # while every rank waits: the function calls per contribution add up.
        contributions = pending.contributions
        contributions[rank] = msg.values
        pending.sim_s[rank] = msg.sim_s
        if len(contributions) == self.job.world_size:
            return self._release(pending, now)
        return Outcome()

    @property
    def steps(self) -> int:
        return self.timeline.run.step if self.timeline is not None else 0

    def _release(self, pending: PendingCollective, now: float) -> Outcome:
        del self._pending[pending.comm]
        fp = pending.fingerprint
        wall_us = round((now - pending.started) * 1e6)
        result = pending.result()
        done = Completed(pending.tag, fp.op, pending.step, fp.numel, pending.sim_s,
                         pending.contributions, result, wall_us)
        events, stop, sim_us = (self.timeline.on_collective(done, self.stopping) if self.timeline is not None
                                else ([], False, wall_us))
        out = Outcome(events=self.flush_output() if self._held else [])
        stop = stop or (self.stopping and pending.tag == tags.TRAIN_STEP)
        now = self.timeline.clock.now if self.timeline is not None else 0.0
        release = Encoded(encode_release(pending.comm, fp.seq, result, stop, now))  # same bytes for all
        out.replies = [(peer, release) for peer in self._rank_ids]
        sims = pending.sim_s.values()
        out.events.append(ev.Collective(
            pending.comm, fp.op, fp.seq, fp.count, fp.dtype, list(self.world), sim_us, pending.tag,
            fp.numel, wall_us if self.report_wall else None, round((max(sims) - min(sims)) * 1e6)))
        out.events.extend(events)
        return out

    def _desync(self, comm: str, rank: int, mine: Fingerprint, expected: int,
                pending: PendingCollective | None) -> Outcome:
        if pending is not None:
            other = pending.first_rank
            theirs = pending.fingerprint.describe()
        else:
            other, theirs = rank, f"the collective with SequenceNumber={expected}"
        detail = (
            "Detected mismatch between collectives on ranks. "
            f"Rank {rank} is running collective: {mine.describe()}, "
            f"but Rank {other} is running collective: {theirs}."
        )
        self._broken.add(comm)
        victims = sorted({rank, *(pending.waiting() if pending else [])})
        self._pending.pop(comm, None)
        out = Outcome(events=[ev.Desync(comm, detail, victims, self._wall())])
        for r in victims:
            out.replies.append((rank_routing_id(r), Abort(
                "desync", comm, mine.seq, mine.op, mine.count, 0, 0, detail)))
        return out

    def _timeout(self, comm: str, pending: PendingCollective, now: float) -> Outcome:
        del self._pending[comm]
        if self.timeline is not None:  # the watchdog's wait passes in simulated time too, from
            # the first rank's enqueue, after its work (the wall timer started at its arrival)
            self.timeline.clock.advance(pending.sim_s.get(pending.first_rank, 0.0) + self.timeout_s)
        self._broken.add(comm)
        fp = pending.fingerprint
        timeout_ms = round(self.timeout_s * 1000)
        elapsed_ms = self.watchdog.elapsed_ms(pending, now, self.report_wall)
        waiting = pending.waiting()
        out = Outcome(events=self.flush_output())
        out.events.append(ev.WatchdogTimeout(
            comm, fp.seq, fp.op, fp.count, timeout_ms, elapsed_ms, waiting,
            pending.missing(self.world), self._wall()))
        if self.timeline is not None:  # each rank's watchdog notices within its poll (sim.watchdog_lag)
            self.timeline.clock.advance(sim.WATCHDOG_REPORT_S)
        for r in waiting:
            out.replies.append((rank_routing_id(r), Abort(
                "watchdog", comm, fp.seq, fp.op, fp.count, timeout_ms, elapsed_ms, "")))
        return out

    def _abort_for_peer(self, comm: str, ranks: list[int], fp: Fingerprint) -> Outcome:
        self._pending.pop(comm, None)
        self._broken.add(comm)
        lost = min(self.lost)
        host = self.agents[lost].host if lost in self.agents else self.job.host if lost == 0 else ""
        out = Outcome()
        now = self.timeline.clock.now if self.timeline is not None else 0.0
        for r in ranks:
            if self.topology.node_of(r) not in self.lost:
                out.replies.append((rank_routing_id(r), Abort(
                    "peer", comm, fp.seq, fp.op, fp.count, 0, 0, host or f"node{lost}")))
                out.events.append(ev.NcclSocketClosed(r, host or f"node{lost}", now))
        return out

    # -- output and departure -------------------------------------------
    def _output(self, rank: int, msg: Output) -> Outcome:
        if msg.stream not in ("stdout", "stderr"):
            return self.reject("bad-stream", rank_routing_id(rank))
        self._held.setdefault(rank, []).append(msg)
        return Outcome()

    def _goodbye(self, peer: bytes, rank: int, exitcode: int) -> Outcome:
        self._departed.add(rank)
        held = self._held.pop(rank, [])
        return Outcome(replies=[(peer, Ack())],
                       events=[*self._kernel_report(rank, exitcode), *(self._to_event(o) for o in held)])

    def _kernel_report(self, rank: int, exitcode: int) -> list[ev.Event]:
        """The driver's Xid lines, once, as the faulty GPU's rank fails: the
        fault came first, its CUDA error (the rank's last words) after."""
        xid = self.xid
        if xid is None or rank != xid.rank or exitcode == 0:
            return []
        self.xid = None
        now, pid = self.clock_now(), self.hellos[rank].pid
        return [ev.KernelMessage(xid.node, text, now + offset) for offset, text in xid.lines(pid)]

    @staticmethod
    def _to_event(msg: Output) -> ev.RankOutput:
        return ev.RankOutput(msg.rank, msg.stream, list(msg.lines))


def _plausible(t: Telemetry, bounds: Bounds) -> bool:
    """Percentages, a temperature short of any GPU's shutdown, and the plan's GPU."""
    return 0 <= t.util <= 100 and 0 <= t.temp_c <= 150 and 0 <= t.power_w <= bounds.power_w \
        and 0 <= t.mem_used_mib <= bounds.memory_mib and t.step >= 0


def _printable(peer: bytes) -> str:
    return peer.decode("ascii", "replace")[:32] if peer.isascii() else peer.hex()[:32]


def handle_frames(core: Coordinator, frames: list[bytes], now: float) -> Outcome:
    """One multipart message from the ROUTER: [routing id, payload]."""
    if len(frames) != 2:
        return core.reject("frames", frames[0] if frames else b"")
    return core.handle(frames[0], frames[1], now)
