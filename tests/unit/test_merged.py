"""One stream from several agents (`--nodes M`, no theatre): under JSONL each
event once, from the agent that made it; node 0's relayed copies go."""

from __future__ import annotations

import io
import json

from fakerun import events as ev
from fakerun.launcher.cluster import Agent, Merged


def merge(lines: list[tuple[int, object]]) -> list[dict]:
    out = io.StringIO()
    merged = Merged([Agent(n, f"host{n}", [], {}) for n in (0, 1)], out, io.StringIO(), jsonl=True)
    for node, event in lines:
        text = event if isinstance(event, str) else json.dumps(ev.to_dict(event))
        merged._put(merged.agents[node], "stdout", text)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_node_0s_relayed_events_come_once_and_each_agents_own_from_it():
    step = ev.Step(1, 6, 9.5, 9.4, 9.6, 1.0)
    started = ev.RankStarted(2, 0, 1, 123, {})
    exited = [ev.RankExited(r, r % 2, r // 2, 100 + r, 0) for r in range(4)]
    finished = ev.RunFinished(0, 1)
    got = merge([(0, started), (1, started), (0, step), (1, step), *((r // 2, e) for r, e in enumerate(exited)),
                 (0, finished), (1, finished)])
    assert [(e["event"], e["node"]) for e in got] == [
        ("rank_started", 0), ("step", 0), *(("rank_exited", r // 2) for r in range(4)),
        ("run_finished", 0), ("run_finished", 1)]


def test_of_the_kinds_both_make_an_agents_own_is_kept():
    relayed = ev.NodeLost(0, "", "failed", "rank 1 exited with code 1", 1.0)
    own = ev.NodeLost(0, "", "silent", "no word from node 0", 2.0, reported_by=1)
    tail = ev.RankOutput(3, "stderr", ["Traceback"], reported_by=1)
    got = merge([(0, relayed), (1, relayed), (1, own), (1, ev.RankOutput(3, "stderr", ["sent"])), (1, tail)])
    assert [(e["event"], e["node"], e.get("reason") or e["lines"][0]) for e in got] == [
        ("node_lost", 0, "failed"), ("node_lost", 1, "silent"), ("rank_output", 1, "Traceback")]


def test_a_line_that_is_not_an_event_is_kept():
    out = io.StringIO()
    merged = Merged([Agent(1, "host1", [], {})], out, io.StringIO(), jsonl=True)
    merged._put(merged.agents[0], "stdout", "{not json")
    assert out.getvalue() == "{not json\n"
