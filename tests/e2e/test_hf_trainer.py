"""The README's drop-in line as the transformers Trainer runs it: its
defaults (linear schedule to 0.0, no evaluation, logging every 500 steps),
the interval-mean losses it logs, float32 values, the evaluation's own
batch size when asked, and a ZeRO-3 --deepspeed config's stage."""

from __future__ import annotations

import ast
import json
import struct

from tests.e2e.test_simulation import FIXED, clean_env

README = ("--model_name_or_path", "meta-llama/Llama-3.1-8B", "--per_device_train_batch_size", "4",
          "--fsdp", "full_shard auto_wrap", "--max_steps", "20", "--output_dir", "out")
PLAIN = (*FIXED, "--output", "plain", "--nproc-per-node", "8")


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_the_readme_line_logs_interval_means_in_float32_down_a_linear_schedule(runner, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    job = runner.start(*PLAIN, "--metrics-file", str(metrics), "train.py", *README, "--logging_steps", "5",
                       env=clean_env(), cwd=tmp_path)
    assert job.wait() == 0, job.stderr
    logs = [ast.literal_eval(line) for line in job.stdout.splitlines() if line.startswith("{'loss'")]
    assert [d["learning_rate"] for d in logs] == [5e-05 * (float(20 - n) / 20.0) for n in (5, 10, 15, 20)]
    assert logs[-1]["learning_rate"] == 0.0
    steps = {r["step"]: r["loss"] for r in map(json.loads, metrics.read_text().splitlines())
             if r.get("type") == "train"}
    assert sorted(steps) == list(range(1, 21))
    for d, end in zip(logs, (5, 10, 15, 20), strict=True):
        assert abs(d["loss"] - sum(steps[s] for s in range(end - 4, end + 1)) / 5) < 1e-4
        assert d["grad_norm"] == f32(d["grad_norm"])
    assert "***** Running Evaluation *****" not in job.stderr  # eval_strategy "no" by default
    assert "Saving model checkpoint to out/checkpoint-20" in job.stderr  # at max_steps, not before


def test_the_readme_line_as_it_is_logs_no_loss_in_its_20_steps(runner, tmp_path):
    """logging_steps 500: the only dict is the train summary."""
    job = runner.start(*PLAIN, "train.py", *README, env=clean_env(), cwd=tmp_path)
    assert job.wait() == 0, job.stderr
    dicts = [line for line in job.stdout.splitlines() if line.startswith("{")]
    assert len(dicts) == 1 and dicts[0].startswith("{'train_runtime': ")


def test_evaluation_when_asked_says_its_batch_of_8(runner, tmp_path):
    job = runner.start(*PLAIN, "train.py", *README, "--eval_strategy", "steps", "--eval_steps", "10",
                       env=clean_env(), cwd=tmp_path)
    assert job.wait() == 0, job.stderr
    assert job.stderr.count("***** Running Evaluation *****") == 2  # steps 10 and 20
    assert job.stderr.count("  Batch size = 8") == 2
    evals = [ast.literal_eval(line) for line in job.stdout.splitlines() if line.startswith("{'eval_loss'")]
    assert len(evals) == 2 and all(d["eval_loss"] == f32(d["eval_loss"]) for d in evals)


def test_a_zero3_deepspeed_config_runs_at_stage_3(runner, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({
        "zero_optimization": {"stage": 3}, "bf16": {"enabled": "auto"}, "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}))
    line = (*README[:4], "--deepspeed", "ds.json", "--bf16", *README[6:])
    job = runner.start(*FIXED, "--output", "jsonl", "--nproc-per-node", "8", "train.py", *line,
                       env=clean_env(), cwd=tmp_path)
    assert job.wait() == 0, job.stderr
    (ident,) = [e["identity"] for e in job.events() if e["event"] == "run_identity"]
    assert (ident["parallel"]["kind"], ident["parallel"]["zero"]) == ("zero", 3)
