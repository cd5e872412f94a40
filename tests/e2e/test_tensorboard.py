"""TensorBoard event files (issue 22), read back with TensorBoard's own
reader (EventAccumulator, the one `tensorboard --logdir` uses) and checked
against the run's JSONL and printed values. Each run: --speed 0, 2 ranks,
few steps."""

from __future__ import annotations

import ast
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # noqa: E402

from tests.conftest import FAKERUN  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
FIXED = ("--speed", "0", "--start-time", "2026-03-02T09:00:00Z", "--output", "jsonl")


def f32(x: float) -> float:
    """What a summary's simple_value (a float32) keeps of x."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def only_file(logdir: Path) -> Path:
    files = list(logdir.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return files[0]


def scalars(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(s.step, s.value, s.wall_time) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw(path: Path) -> list:
    return list(LegacyEventFileLoader(str(path)).Load())


def rank_started(job, rank: int) -> dict:
    return next(e for e in job.of("rank_started") if e["rank"] == rank)


def test_the_default_style_writes_its_own_tags_equal_to_the_jsonl_and_byte_identical(runner, tmp_path):
    board = tmp_path / "tb"
    args = ("--nproc", "2", "--max-steps", "6", "--seed", "7", *FIXED, "--tensorboard")
    job = runner.run(*args, str(board))
    assert job.proc.returncode == 0, job.stderr
    path = only_file(board)
    # events.out.tfevents.%010d.<host>.<pid>.<n>: the writing rank's host and pid as the run shows them
    host = job.of("run_identity")[0]["identity"]["hosts"][0]
    first = raw(path)[0]
    assert path.name == f"events.out.tfevents.{int(first.wall_time):010d}.{host}.{rank_started(job, 0)['pid']}.0"
    assert (first.file_version, first.source_metadata.writer) == (
        "brain.Event:2", "tensorboard.summary.writer.event_file_writer")
    got = scalars(path)
    steps, evals = job.of("step"), job.of("validation")
    fields = {"train/loss": "loss", "train/ppl": "ppl", "train/lr": "lr", "train/grad_norm": "grad_norm",
              "train/tokens_per_s": "tokens_per_s", "train/samples_per_s": "samples_per_s",
              "train/step_time_s": "step_time_s", "train/mfu": "mfu"}
    for tag, field in fields.items():
        assert got[tag] == [(s["step"], f32(s[field]), s["time"]) for s in steps], tag
    assert evals and got["val/loss"] == [(v["step"], f32(v["val_loss"]), v["time"]) for v in evals]
    assert got["val/ppl"] == [(v["step"], f32(v["val_ppl"]), v["time"]) for v in evals]
    assert set(got) == {*fields, "val/loss", "val/ppl"}
    again = runner.run(*args, str(tmp_path / "tb2"))
    assert again.proc.returncode == 0
    copy = only_file(tmp_path / "tb2")
    assert (copy.name, copy.read_bytes()) == (path.name, path.read_bytes())


def test_the_hf_trainer_writes_its_callbacks_file_with_the_printed_log_dicts(runner, tmp_path):
    """TensorBoardCallback at transformers v4.46.3: runs/<%b%d_%H-%M-%S>_<host> under
    output_dir, the `args` and `model_config` texts, on_log's rewritten keys at
    global_step, the logs the script prints (ProgressCallback drops total_flos)."""
    job = runner.run("--nproc", "2", "--seed", "3", "--style", "hf@4.46.3", *FIXED[:-2], "--output", "plain",
                     "--tee", "3", "run_clm.py", "--model_name_or_path", "gpt2", "--max_steps", "8",
                     "--logging_steps", "4", "--eval_strategy", "steps", "--eval_steps", "8", "--output_dir", "out",
                     "--report_to", "tensorboard", cwd=tmp_path, env={**os.environ, "NCCL_DEBUG": "INFO"})
    assert job.proc.returncode == 0, job.stderr
    # Rank 0's host and pid as its NCCL lines say them (`host:pid:tid [0] NCCL INFO`).
    host, pid = re.search(r"^\[default0\]:([^:\s]+):(\d+):\d+ \[0\] NCCL INFO", job.stdout, re.M).groups()
    path = only_file(tmp_path / "out" / "runs")
    assert path.parent.name.endswith(f"_{host}") and path.name.split(".")[-3:] == [host, pid, "0"]
    printed = [ast.literal_eval(line.removeprefix("[default0]:")) for line in job.stdout.splitlines()
               if line.startswith("[default0]:{'")]
    got = scalars(path)
    expected: dict[str, list[float]] = {}
    for logged in printed:
        for key, value in logged.items():
            tag = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
            expected.setdefault(tag, []).append(value)
    written = {tag: [v for _, v, _ in points] for tag, points in got.items() if tag != "train/total_flos"}
    assert set(written) == set(expected)
    for tag, values in expected.items():  # 4.x prints the epoch to 2 places (ProgressCallback.on_log)
        shown = [round(v, 2) for v in written[tag]] if tag == "train/epoch" else written[tag]
        assert shown == [round(v, 2) if tag == "train/epoch" else f32(v) for v in values], tag
    assert [s for s, _, _ in got["train/loss"]] == [4, 8] and [s for s, _, _ in got["eval/loss"]] == [8]
    assert [s for s, _, _ in got["train/train_runtime"]] == [8] and got["train/total_flos"][0][1] > 0
    texts = {v.tag: v.tensor.string_val[0].decode() for e in raw(path) for v in e.summary.value
             if v.metadata.plugin_data.plugin_name == "text"}
    assert set(texts) == {"args/text_summary", "model_config/text_summary"}
    assert '"report_to": [\n    "tensorboard"\n  ]' in texts["args/text_summary"]
    assert f'"logging_dir": "out/runs/{path.parent.name}"' in texts["args/text_summary"]
    assert '"_name_or_path": "gpt2"' in texts["model_config/text_summary"]


def test_megatron_writes_on_the_last_rank_s_node_alone(runner, tmp_path):
    """_set_tensorboard_writer: `args.rank == args.world_size - 1`; two nodes,
    one rank each: node 1 writes, node 0 does not, the file is written once."""
    job = runner.run("--nodes", "2", "--nproc", "1", "--no-theatre", "--seed", "5", *FIXED, "pretrain_gpt.py",
                     "--num-layers", "4", "--hidden-size", "512", "--num-attention-heads", "8",
                     "--seq-length", "1024", "--micro-batch-size", "2", "--global-batch-size", "8",
                     "--train-iters", "6", "--log-interval", "3", "--eval-interval", "3", "--eval-iters", "1",
                     "--lr", "1e-4", "--tensorboard-dir", "tb", "--log-validation-ppl-to-tensorboard", cwd=tmp_path)
    assert job.proc.returncode == 0, job.stderr
    path = only_file(tmp_path / "tb")
    host = job.of("run_identity")[0]["identity"]["hosts"][1]
    assert path.name.split(".")[-3:] == [host, str(rank_started(job, 1)["pid"]), "0"]
    got = scalars(path)
    steps = job.of("step", node=0)  # node 1 relays node 0's copy
    batch = 8
    assert got["lm loss"] == [(s["step"], f32(s["loss"]), s["time"]) for s in steps]
    assert got["lm loss vs samples"] == [(s["step"] * batch, f32(s["loss"]), s["time"]) for s in steps]
    assert [v for _, v, _ in got["learning-rate"]] == [f32(s["lr"]) for s in steps]
    assert {v for _, v, _ in got["batch-size"]} == {8.0}
    evals = job.of("validation", node=0)
    assert [(s, v) for s, v, _ in got["lm loss validation"]] == [(e["step"], f32(e["val_loss"])) for e in evals]
    assert "iteration-time" not in got  # --log-timers-to-tensorboard not given
    assert {"loss-scale", "grad-norm", "lm loss validation ppl"} <= set(got)


def test_lightnings_default_logger_is_a_tensorboard_logger_in_the_version_directory(runner, tmp_path):
    """tensorboard installed: logger_connector.py's TensorBoardLogger(save_dir=default_root_dir),
    under lightning_logs/version_N with hparams.yaml and the checkpoints; no metrics.csv."""
    job = runner.run("--nproc", "2", "--seed", "3", "--max-steps", "8", *FIXED, "--tensorboard", "tb",
                     "train_lightning.py", cwd=tmp_path)
    assert job.proc.returncode == 0, job.stderr
    version = tmp_path / "tb" / "lightning_logs" / "version_0"
    path = only_file(version)
    assert path.parent == version and (version / "hparams.yaml").is_file()
    assert not (version / "metrics.csv").exists() and list((version / "checkpoints").glob("*.ckpt"))
    assert path.name.split(".")[-3:] == [job.of("run_identity")[0]["identity"]["hosts"][0],
                                         str(rank_started(job, 0)["pid"]), "0"]
    every = job.of("run_identity")[0]["identity"]["hyper"]["log_every"]
    got = scalars(path)
    assert got["hp_metric"] == [(0, -1.0, got["hp_metric"][0][2])]
    logged = [s for s in job.of("step") if s["step"] % every == 0]
    assert logged and got["train_loss"] == [(s["step"] - 1, f32(s["loss"]), s["time"]) for s in logged]
    assert [(s, v) for s, v, _ in got["epoch"]] == [(s["step"] - 1, s["epoch"] - 1.0) for s in logged]


def test_without_the_extra_asking_for_event_files_is_one_line_and_exit_2(tmp_path):
    """A `tensorboard` package whose import fails comes first on the path:
    the real import is taken, and refused before any rank starts."""
    fake = tmp_path / "fake" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tensorboard'\")\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{SRC}"}
    for extra in (["--tensorboard", str(tmp_path / "tb")],
                  ["pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "256", "--tensorboard-dir", "x"]):
        done = subprocess.run([*FAKERUN, "--nproc", "2", "--speed", "0", *extra], env=env, capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        option = extra[0] if extra[0].startswith("--") else "--tensorboard-dir"
        assert done.stderr == (f"fakerun: error: {option} needs the tensorboard extra: "
                               "pip install 'fakerun[tensorboard]'\n")
    assert not (tmp_path / "tb").exists() and not (tmp_path / "x").exists()
