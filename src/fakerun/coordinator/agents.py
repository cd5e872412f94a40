"""The coordinator's side of the other nodes' agents: their hellos, their
reports (alive, stopping, done, failed), and a node lost, whose ranks' peers
abort every collective that waits for them, as NCCL's would."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fakerun import events as ev
from fakerun.coordinator.job import JobSpec, Outcome
from fakerun.protocol import Ack, AgentHello, AgentReport, Refused, Welcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from fakerun.coordinator.collective import Fingerprint, PendingCollective


@dataclass
class AgentLink:
    """Another node's agent, as the coordinator knows it."""

    node_rank: int
    host: str
    last_seen: float
    state: str = "alive"  # alive | failed | stopping | done | lost


class AgentSide:
    """A part of Coordinator (coordinator/core.py): the state it keeps here
    is declared below, and set by Coordinator.__init__."""

    job: JobSpec
    nproc: int
    agents: dict[int, AgentLink]
    lost: set[int]
    _agent_ids: dict[bytes, int]
    _pending: dict[str, PendingCollective]
    _wall: Callable[[], float]

    # Coordinator's own, which these use:
    def reject(self, reason: str, peer: bytes, times: int = 1) -> Outcome: ...

    def _complete_if_ready(self, out: Outcome) -> Outcome: ...

    def _abort_for_peer(self, comm: str, ranks: list[int], fp: Fingerprint) -> Outcome: ...

    @property
    def waiting_for_agents(self) -> bool:
        """Another node still needs the coordinator (it has not said it is done)."""
        return any(a.state in ("alive", "stopping") for a in self.agents.values())

    def missing_nodes(self) -> list[int]:
        return [n for n in range(1, self.job.nnodes) if n not in self.agents]

    def node_failed(self, node: int, reason: str, detail: str) -> Outcome:
        """Node `node` failed (or fell silent): every collective that waits
        for one of its ranks fails on the other nodes, as NCCL's would."""
        if node in self.lost:
            return Outcome()
        self.lost.add(node)
        link = self.agents.get(node)
        if link is not None:
            link.state = "failed" if reason == "failed" else "lost"
        host = link.host if link else ""
        out = Outcome(events=[ev.NodeLost(node, host, reason, detail, self._wall())])
        for comm, pending in list(self._pending.items()):
            out.extend(self._abort_for_peer(comm, pending.waiting(), pending.fingerprint))
        return out

    def _from_agent(self, peer: bytes, msg: Any, now: float) -> Outcome:
        node = self._agent_ids[peer]
        if isinstance(msg, AgentHello):
            return self._agent_hello(peer, node, msg, now)
        link = self.agents.get(node)
        if link is None or not isinstance(msg, AgentReport) or msg.node_rank != node:
            return self.reject("not-joined" if link is None else "unexpected-kind", peer)
        link.last_seen = now
        if msg.state == "failed":
            return self.node_failed(node, "failed", msg.detail)
        if (link.state, msg.state) in (("alive", "stopping"), ("alive", "done"), ("stopping", "done")):
            link.state = msg.state
        elif msg.state not in ("alive", "stopping", "done"):
            return self.reject("bad-state", peer)
        # "done": its ranks are gone. The Ack, after every event so far, tells it
        # it has seen the whole run and may go.
        return Outcome(replies=[(peer, Ack())] if msg.state == "done" else [])

    def _agent_hello(self, peer: bytes, node: int, msg: AgentHello, now: float) -> Outcome:
        problem = self._agent_problem(node, msg)
        if problem:
            out = self.reject(problem, peer)
            out.replies.append((peer, Refused(problem)))
            return out
        link = self.agents.setdefault(node, AgentLink(node, msg.host[:64], now))
        link.last_seen = now  # a repeated hello (its Welcome crossed it) is answered alike
        return self._complete_if_ready(Outcome(replies=[(peer, Welcome(self.job.world_size, self._wall()))]))

    def _agent_problem(self, node: int, msg: AgentHello) -> str:
        if msg.run_id != self.job.run_id:
            return "wrong-run-id"
        if not hmac.compare_digest(msg.token.encode(), self.job.token.encode()):
            return "wrong-token"
        if msg.node_rank != node:
            return "bad-node"
        if msg.nproc != self.nproc or msg.digest != self.job.digest:
            return "config-mismatch"
        if node in self.agents and self.agents[node].host != msg.host[:64]:
            return "duplicate-node"
        return ""
