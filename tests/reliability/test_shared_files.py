"""Files the nodes of one job share: node 0 owns the --metrics-file, as rank 0
owns a training script's logging. Every agent is handed the same options
(`--nodes`, srun), so every other node gets the path too: it must never open,
truncate or write it, or each line comes twice and node 0's first lines go."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fakerun.config.options import free_port
from tests.conftest import Runner

STEPS = 6
RUN = ("--nproc", "2", "--speed", "0", "--seed", "5", "--max-steps", str(STEPS), "--output", "jsonl")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_written_once(path: Path, node0_steps: list[dict[str, Any]]) -> None:
    """One run's metrics, each line once, the figures node 0's stream shows."""
    rows = records(path)
    events = [r["event"] for r in rows if r["type"] == "event"]
    assert events.count("run_started") == 1 and rows[0]["event"] == "run_started", events
    assert events.count("run_finished") == 1 and rows[-1] == {
        "type": "event", "event": "run_finished", "exit_code": 0, "steps": STEPS}
    train = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in train] == [s["loss"] for s in node0_steps]
    for kind, steps in (("eval", [r["step"] for r in rows if r["type"] == "eval"]),
                        ("checkpoint", [r["step"] for r in rows if r.get("event") == "checkpoint"])):
        assert steps and len(steps) == len(set(steps)), (kind, steps)


def test_a_local_cluster_writes_the_metrics_file_once(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    job = runner.run("--nodes", "2", "--no-theatre", *RUN, "--metrics-file", str(path), timeout=90)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert_written_once(path, job.of("step", node=0))


def test_two_agents_given_one_metrics_path_write_it_once(runner: Runner, tmp_path: Path) -> None:
    """As under srun: two agents, the same options, a path on storage both see.
    Node 1 starts once node 0 has written its first line (an agent starting
    later truncated it)."""
    path = tmp_path / "m.jsonl"
    env = os.environ | {"FAKERUN_TOKEN": os.urandom(8).hex(), "FAKERUN_OPTS": ""}
    common = ("--nnodes", "2", "--master-port", str(free_port()), *RUN, "--metrics-file", str(path))
    node0 = runner.start(*common, "--node-rank", "0", env=env)
    node0.wait_for_event("run_started")
    assert records(path)[0]["event"] == "run_started"
    node1 = runner.start(*common, "--node-rank", "1", "--rdzv-id", node0.marker, env=env)
    assert node0.wait(90) == 0, node0.stderr[-2000:]
    assert node1.wait(30) == 0, node1.stderr[-2000:]
    assert_written_once(path, node0.of("step"))
