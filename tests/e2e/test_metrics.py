"""--metrics-file: JSONL training metrics, never torn, repeatable."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import wait_until


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_file_contents(runner, tmp_path):
    path = tmp_path / "metrics.jsonl"
    job = runner.run("--nproc", "3", "--max-steps", "12", "--speed", "0", "--seed", "4",
                     "--metrics-file", str(path), "--output", "jsonl")
    assert job.proc.returncode == 0
    rows = records(path)
    train = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    steps = job.of("step")
    for r, s in zip(train, steps, strict=True):  # the same figures as the event stream
        assert (r["loss"], r["lr"], r["mfu"], r["ppl"]) == (s["loss"], s["lr"], s["mfu"], s["ppl"])
        assert len(r["gpu_mem_mib"]) == 3 and all(m > 0 for m in r["gpu_mem_mib"])
    evals = [r for r in rows if r["type"] == "eval"]
    assert evals and [e["val_loss"] for e in evals] == [v["val_loss"] for v in job.of("validation")]
    assert rows[0]["event"] == "run_started" and rows[-1] == {
        "type": "event", "event": "run_finished", "exit_code": 0, "steps": 12}


def test_metrics_never_torn_when_the_launcher_is_killed(runner, tmp_path):
    path = tmp_path / "metrics.jsonl"
    job = runner.start("--nproc", "4", "--max-steps", "100000", "--speed", "0", "--metrics-file", str(path))
    wait_until(lambda: path.exists() and path.stat().st_size > 200_000, 60)
    job.kill(signal.SIGKILL)
    job.wait()
    wait_until(lambda: not runner.leftovers(), 3)  # ranks die with their launcher
    text = path.read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]  # every line whole
    assert len(rows) > 500


def test_metrics_are_identical_for_a_fixed_seed(runner, tmp_path):
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in paths:
        job = runner.run("--nproc", "2", "--max-steps", "20", "--speed", "0", "--seed", "8",
                         "--start-time", "2026-01-30T14:23:15", "--metrics-file", str(path))
        assert job.proc.returncode == 0
    # Each job carries its own --rdzv-id marker as run id; everything else must match.
    a, b = ([{k: v for k, v in row.items() if k != "run_id"} for row in records(p)] for p in paths)
    assert a == b and len(a) > 20


@pytest.mark.parametrize("target", ["dir", "missing-parent"])
def test_bad_metrics_path_is_a_usage_error(runner, tmp_path, target):
    path = tmp_path if target == "dir" else tmp_path / "nope" / "m.jsonl"
    job = runner.run("--metrics-file", str(path))
    assert job.proc.returncode == 2 and job.stderr.startswith("fakerun: error: --metrics-file")
    assert len(job.stderr.splitlines()) == 1
