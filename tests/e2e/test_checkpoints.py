"""Checkpoints on disk, --resume, and what a kill mid-save leaves behind."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from fakerun import checkpoint

# TrainerState's fields (trainer_callback.py at v4.42.4, v4.44.2, v4.46.3; v5.0.0 adds
# best_global_step), as save_to_json writes them: sorted.
TRAINER_STATE = ["best_metric", "best_model_checkpoint", "epoch", "eval_steps", "global_step",
                 "is_hyper_param_search", "is_local_process_zero", "is_world_process_zero", "log_history",
                 "logging_steps", "max_steps", "num_input_tokens_seen", "num_train_epochs", "save_steps",
                 "stateful_callbacks", "total_flos", "train_batch_size", "trial_name", "trial_params"]
TRAINER_STATE_5 = sorted([*TRAINER_STATE, "best_global_step"])


def run_to(runner, out, *extra):
    # Seed 10: a model sharded into several safetensors files (Mistral-7B), three epochs of 4 steps.
    return runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0", "--seed", "10",
                      "--output-dir", str(out), "--output", "jsonl", *extra)


def hf_run(runner, out, *extra, seed="10", steps="10", style="hf", script=(), model="meta-llama/Llama-3.2-3B"):
    """The Trainer (transformers 4.46.3, its default pin) of Llama-3.2-3B: 6.4 GB of weights in
    two shards of "5GB" (one file under 5.x's "50GB"), a log every 2 steps, an evaluation and a
    save at the end."""
    return runner.run("--style", style, "--nproc", "2", "--speed", "0", "--seed", seed, "--max-steps", steps,
                      "--start-time", "2026-01-01 00:00:00", "--output-dir", str(out), *extra,
                      "train.py", "--model_name_or_path", model, "--logging_steps", "2",
                      "--per_device_train_batch_size", "1", *script)


def walk(root):
    """Every file under `root`, hidden ones too, relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# The lines that name a file the Trainer wrote (trainer.py `_save`, modeling_utils.py
# `save_pretrained`, configuration_utils.py, tokenization_utils_base.py, at v4.46.3 and v5.0.0):
# the path each names.
# A logger line may follow a tqdm redraw on the same line (the bar ends in no newline): not anchored at ^.
NAMED = (re.compile(r"Configuration saved in (\S+)$"), re.compile(r"Model weights saved in (\S+)$"),
         re.compile(r"index located at (\S+)\.$"), re.compile(r"tokenizer config file saved in (\S+)$"),
         re.compile(r"Special tokens file saved in (\S+)$"), re.compile(r"chat template saved in (\S+)$"))
# What the tokenizer's save_pretrained names in its lines, per version (the files each
# writes: tests/fixtures/tokenizers/<version>.json), and those it names in none: tokenizer.json,
# and 4.x's copy of a SentencePiece repo's tokenizer.model.
TOKENIZER_4 = ("tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_5_CHAT = ("chat_template.jinja", "tokenizer_config.json")
UNNAMED = ("tokenizer.json",)
UNNAMED_SP_4 = ("tokenizer.json", "tokenizer.model")
# Mistral-7B's DDP replicas (weights, grads, Adam states: ~116 GB) fit a 192 GB GPU, not an H200
# (nor, under hf@5's torch 2.9.1, which has no ROCm build here, any GPU that runs it).
MI300X = ("--gpu", "AMD Instinct MI300X")


@pytest.mark.parametrize(("style", "model", "extra", "shards", "fields", "tokenizer", "unnamed"), [
    ("hf", "meta-llama/Llama-3.2-3B", (), 2, TRAINER_STATE, TOKENIZER_4, UNNAMED),
    ("hf@5", "meta-llama/Llama-3.2-3B-Instruct", (), 1, TRAINER_STATE_5, TOKENIZER_5_CHAT, UNNAMED),
    ("hf", "mistralai/Mistral-7B-v0.1", MI300X, 3, TRAINER_STATE, TOKENIZER_4, UNNAMED_SP_4),
    # No public source of its tokenizer: its Trainer runs without a processing_class.
    ("hf", "Qwen/Qwen2.5-3B", (), 2, TRAINER_STATE, (), ()),
])
def test_the_trainers_files_are_the_ones_its_lines_name(runner, tmp_path, style, model, extra, shards, fields,
                                                        tokenizer, unnamed):
    """Every file a line names exists, and nothing else is written beyond
    what those saves write with them (trainer.py `_save_checkpoint` at
    v4.46.3 and v5.0.0: the index's shards, the tokenizer's tokenizer.json, training_args.bin,
    optimizer.pt, scheduler.pt, the RNG states, trainer_state.json of the version's fields); the
    final save_model's files in the output dir."""
    out = tmp_path / "out"
    job = hf_run(runner, out, *extra, style=style, model=model)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    named = {m.group(1) for line in job.stderr.splitlines() for rx in NAMED if (m := rx.search(line))}
    saves = [m.group(1) for line in job.stderr.splitlines()
             if (m := re.search(r"Saving model checkpoint to (\S+)$", line))]
    assert saves and saves[-1] == str(out)  # trainer.save_model() at the end, into the output dir
    assert named and all(Path(p).is_file() for p in named)
    expected = set()
    for save in saves:
        folder = Path(save)
        # _save's training_args.bin (torch.save(self.args)) beside the model, named by no line
        expected |= {str(folder / n) for n in ("config.json", "generation_config.json", "training_args.bin")}
        assert {str(folder / n) for n in tokenizer} <= named
        expected |= {str(folder / n) for n in (*tokenizer, *unnamed)}
        if shards == 1:
            expected.add(str(folder / "model.safetensors"))
        else:
            index = json.loads((folder / "model.safetensors.index.json").read_text())
            assert len(set(index["weight_map"].values())) == shards
            expected |= {str(folder / "model.safetensors.index.json")} | {str(folder / s)
                                                                            for s in index["weight_map"].values()}
        if folder.name.startswith("checkpoint-"):
            expected |= {str(folder / n) for n in ("optimizer.pt", "scheduler.pt", "rng_state_0.pth",
                                                   "rng_state_1.pth", "trainer_state.json")}
    assert {str(out / f) for f in walk(out)} == expected  # nothing else, no hidden file
    state = json.loads((Path(saves[-2]) / "trainer_state.json").read_text())
    assert list(state) == fields
    logged = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in logged] == list(range(2, state["global_step"] + 1, 2))  # logging steps only


def test_trainer_state_keeps_what_the_trainer_logged(runner, tmp_path):
    """log_history holds the very entries the Trainer printed (Trainer.log
    appends what it prints): every logged loss, grad norm, LR and eval loss,
    digit for digit; only the printed epoch is ProgressCallback's round(_, 2)."""
    import ast
    out = tmp_path / "out"
    job = hf_run(runner, out, steps="8", script=("--eval_strategy", "steps", "--eval_steps", "4"))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    printed = [ast.literal_eval(line) for line in job.stdout.splitlines()
               if line.startswith(("{'loss'", "{'eval_loss'"))]
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    kept = state["log_history"]
    assert len(printed) == len(kept) and any("eval_loss" in p for p in printed)
    for shown, entry in zip(printed, kept, strict=True):
        assert {k: v for k, v in entry.items() if k not in ("step", "epoch")} == \
            {k: v for k, v in shown.items() if k != "epoch"}
        assert shown["epoch"] == round(entry["epoch"], 2)


def test_resume_from_the_trainers_checkpoint_continues_its_loss(runner, tmp_path):
    """Resumed under another seed (the command line's), the run reads the
    step, model and history from the Trainer's files, and its losses carry
    on from the checkpoint's last logged one."""
    out = tmp_path / "out"
    assert hf_run(runner, out, steps="6").proc.returncode == 0  # saves checkpoint-6 at its end
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    last = [h for h in state["log_history"] if "loss" in h][-1]
    resumed = hf_run(runner, out, "--resume", "--output", "jsonl", seed="11")
    assert resumed.proc.returncode == 0, resumed.stderr[-2000:]
    steps = resumed.of("step")
    assert steps[0]["step"] == state["global_step"] + 1
    first_logged = (steps[0]["loss"] + steps[1]["loss"]) / 2  # the mean over the first logging interval
    assert abs(first_logged - last["loss"]) / last["loss"] < 0.03  # carries on, within the noise of a log
    fresh = hf_run(runner, tmp_path / "fresh", "--output", "jsonl", seed="11")
    other = {s["step"]: s["loss"] for s in fresh.of("step")}
    ratio = steps[0]["loss"] / other[steps[0]["step"]]
    assert abs(ratio - 1) > 1e-9  # scaled: seed 11's own curve, put through the checkpoint's loss


def test_save_total_limit_keeps_that_many_checkpoints(runner, tmp_path):
    """Trainer._rotate_checkpoints (trainer.py at v4.46.3): after a save, the
    oldest checkpoints in the output dir past save_total_limit go, those of
    an earlier run too, each named in a line; exactly the limit is left."""
    out = tmp_path / "out"
    assert hf_run(runner, out, steps="6").proc.returncode == 0
    job = runner.run("--style", "hf", "--nproc", "2", "--speed", "0", "--seed", "10", "--max-steps", "10",
                     "--start-time", "2026-01-01 00:00:00", "--resume", "--output-dir", str(out),
                     "train.py", "--model_name_or_path", "meta-llama/Llama-3.2-3B", "--logging_steps", "2",
                     "--per_device_train_batch_size", "1", "--save_total_limit", "1")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-10"]
    lines = job.stderr.splitlines()
    deleting = [line for line in lines if line.startswith("Deleting older checkpoint")]
    assert deleting == [f"Deleting older checkpoint [{out}/checkpoint-6] due to args.save_total_limit"]
    saved = next(i for i, line in enumerate(lines) if line.endswith(f"Saving model checkpoint to {out}/checkpoint-10"))
    assert lines.index(deleting[0]) > saved


def test_the_default_styles_files_are_the_ones_its_lines_name(runner, tmp_path):
    """The seeds' script: "Saving model shards: k/k" counts the weight files
    written, beside config.json, optimizer.pt and scheduler.pt; "Exporting to
    SafeTensors format: k files" the weights (and config) it writes into the
    output dir at the end, the export event's files; --resume reads that layout."""
    out = tmp_path / "out"
    job = run_to(runner, out)
    assert job.proc.returncode == 0
    events = job.of("checkpoint")
    [export] = job.of("export")
    shards = events[-1]["shards"]
    exported = sorted(_torchrun_files(shards)[:-2])  # the weights and config.json
    assert sorted(export["files"]) == exported
    assert walk(out) == sorted([*(f"checkpoint-{c['step']}/{n}" for c in events for n in _torchrun_files(c["shards"])),
                                *exported])
    text = runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0", "--seed", "10").stdout
    assert f"| {shards}/{shards}" in text and f"SafeTensors format: {shards} files" in text
    assert events[-1]["shards"] == 3  # Mistral-7B's 14.5 GB in "5GB" shards


def _torchrun_files(shards):
    weights = (["model.safetensors"] if shards == 1 else
               [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
               + ["model.safetensors.index.json"])
    return [*weights, "config.json", "optimizer.pt", "scheduler.pt"]


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
    archives' stamps and ids), saved at the same simulated time (their mtime,
    which --resume reads back)."""
    trees = []
    for name in ("a", "b"):
        out = tmp_path / name
        job = runner.run("--nproc", "2", "--max-steps", "6", "--speed", "0", "--seed", "6",
                         "--start-time", "2026-01-02T03:04:05", "--output-dir", str(out), "--output", "jsonl")
        assert job.proc.returncode == 0, job.stderr[-2000:]
        trees.append({str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime)
                      for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1] and any(name.endswith(".pt") for name in trees[0])
