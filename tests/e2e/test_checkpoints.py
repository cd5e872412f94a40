"""Checkpoints on disk, --resume, and what a kill mid-save leaves behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import time

from fakerun import checkpoint


def run_to(runner, out, *extra):
    # Seed 10: a model sharded into several safetensors files (Mistral-7B), three epochs of 4 steps.
    return runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0", "--seed", "10",
                      "--output-dir", str(out), "--output", "jsonl", *extra)


def test_checkpoint_layout(runner, tmp_path):
    out = tmp_path / "out"
    job = run_to(runner, out)
    assert job.proc.returncode == 0
    saved = sorted((p.name for p in out.iterdir()), key=lambda n: int(n.split("-")[1]))
    assert saved == [f"checkpoint-{c['step']}" for c in job.of("checkpoint")]
    ckpt = out / saved[-1]
    names = {p.name for p in ckpt.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "optimizer.pt", "scheduler.pt",
            "rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= names
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards and all(s in names for s in shards)
    assert [c["shards"] for c in job.of("checkpoint")][-1] == len(shards)  # the event tells of the files
    headers = {}
    for shard in shards:  # safetensors headers of the real tensors; the data left out by default
        raw = (ckpt / shard).read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + length])
        assert header.pop("__metadata__") == {"format": "pt"} and len(raw) == 8 + length
        headers |= {name: (shard, t) for name, t in header.items()}
    assert {name: shard for name, (shard, _) in headers.items()} == index["weight_map"]
    assert sum(t["data_offsets"][1] - t["data_offsets"][0] for _, t in headers.values()) \
        == index["metadata"]["total_size"]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 10 and [h["step"] for h in state["log_history"]] == list(range(1, 11))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_resume_continues_the_same_curve(runner, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    whole = run_to(runner, full)
    run_to(runner, part)
    first = sorted(part.glob("checkpoint-*"), key=lambda p: int(p.name[11:]))[0]
    for later in part.glob("checkpoint-*"):
        if later != first:
            shutil.rmtree(later)
    resumed = run_to(runner, part, "--resume")
    assert resumed.proc.returncode == 0
    start = int(first.name[11:])
    assert [s["step"] for s in resumed.of("step")] == list(range(start + 1, 11))
    expected = {s["step"]: s["loss"] for s in whole.of("step")}
    assert all(s["loss"] == expected[s["step"]] for s in resumed.of("step"))


def test_bad_resume_targets_are_usage_errors(runner, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "checkpoint-7"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "trainer_state.json").write_text("{not json")
    for args in (["--resume", str(empty)], ["--resume", str(partial)], ["--resume", str(corrupt)],
                 ["--resume", str(tmp_path / "missing")], ["--resume"]):
        job = runner.run(*args)
        assert job.proc.returncode == 2, args
        lines = job.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fakerun: error: --resume"), job.stderr


def test_latest_skips_an_incomplete_checkpoint(tmp_path):
    good = tmp_path / "checkpoint-5"
    good.mkdir()
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    (good / checkpoint.RESUME).write_text(json.dumps({"time": 1.0}))
    torn = tmp_path / "checkpoint-9"
    torn.mkdir()
    (torn / "config.json").write_text("{}")
    assert checkpoint.find(tmp_path).step == 5


def test_a_kill_mid_save_never_leaves_an_acceptable_partial_checkpoint(tmp_path):
    files = {f"model-{i:05d}.safetensors": os.urandom(64 * 1024) for i in range(40)}
    files[checkpoint.RESUME] = json.dumps({"time": 2.0}).encode()
    files["trainer_state.json"] = json.dumps({"global_step": 3}).encode()
    rng = random.Random(7)
    for attempt in range(25):
        target = tmp_path / f"run{attempt}" / "checkpoint-3"
        pid = os.fork()
        if pid == 0:
            try:
                checkpoint.write(target, files)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 0.02))  # a random moment of the save: the point of the test
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if target.exists():  # either absent, or complete and accepted
            assert checkpoint.find(target).step == 3
            assert {p.name for p in target.iterdir()} == set(files)
        else:
            try:
                checkpoint.find(target.parent)
            except checkpoint.CheckpointError:
                continue
            raise AssertionError("an incomplete save was accepted")


def test_checkpoints_repeat_byte_for_byte(runner, tmp_path):
    """--seed, --start-time and --speed 0: the same files, to the byte (the
    archives' stamps and ids, the clock in .resume.json)."""
    trees = []
    for name in ("a", "b"):
        out = tmp_path / name
        job = runner.run("--nproc", "2", "--max-steps", "6", "--speed", "0", "--seed", "6",
                         "--start-time", "2026-01-02T03:04:05", "--output-dir", str(out), "--output", "jsonl")
        assert job.proc.returncode == 0, job.stderr[-2000:]
        trees.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1] and any(name.endswith(".pt") for name in trees[0])
