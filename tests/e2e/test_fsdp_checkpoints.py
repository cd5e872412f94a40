"""The Trainer's checkpoints under FSDP (`--fsdp "full_shard auto_wrap"`, the
README's drop-in line), as transformers v4.46.3 trainer.py (`save_model`,
`_save_optimizer_and_scheduler`) and accelerate v1.1.1 utils/fsdp_utils.py
(`save_fsdp_model`, `save_fsdp_optimizer`) write them, with a full state dict
(accelerate's default) and a sharded one (FSDP_STATE_DICT_TYPE); --resume
from each carries on the loss curve."""

from __future__ import annotations

import json
import os
import pickletools
import re
import zipfile
from pathlib import Path

from tests.e2e.test_checkpoints import NAMED, walk

SHARDED = {**os.environ, "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}
# A small model (Qwen2.5-0.5B: one safetensors file, a tied head), 2 ranks, 4 steps, a save at the end.
MODEL = "Qwen/Qwen2.5-0.5B"


def fsdp_run(runner, out, *extra, steps="4", env=None, script=()):
    return runner.run("--style", "hf", "--nproc", "2", "--speed", "0", "--seed", "10", "--max-steps", steps,
                      "--start-time", "2026-01-01 00:00:00", "--output-dir", str(out), *extra,
                      "train.py", "--model_name_or_path", MODEL, "--logging_steps", "2",
                      "--per_device_train_batch_size", "1", "--fsdp", "full_shard auto_wrap", *script, env=env)


def pickle_strings(data: bytes) -> list[str]:
    return [arg for op, arg, _ in pickletools.genops(data) if op.name in ("BINUNICODE", "SHORT_BINUNICODE")]


def test_a_full_state_dict_saves_the_model_and_rank_0s_full_optimizer(runner, tmp_path):
    """checkpoint-4/: save_model's files (save_pretrained), then
    save_fsdp_model's pytorch_model_fsdp.bin and save_fsdp_optimizer's
    optimizer.bin (rank 0's, of the full state dicts) instead of optimizer.pt,
    scheduler.pt, one RNG state per rank, trainer_state.json; save_model's
    files again at the end. Every file a line names exists."""
    out = tmp_path / "out"
    job = fsdp_run(runner, out)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    named = {m.group(1) for line in job.stderr.splitlines() for rx in NAMED if (m := rx.search(line))}
    assert named and all(Path(p).is_file() for p in named)
    # _save's training_args.bin too: the --fsdp line's TrainingArguments (checkpoint/training_args.py)
    model = {"config.json", "generation_config.json", "model.safetensors", "training_args.bin"}
    ckpt = {"pytorch_model_fsdp.bin", "optimizer.bin", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth",
            "trainer_state.json"}
    assert set(walk(out)) == model | {f"checkpoint-4/{n}" for n in model | ckpt}
    with zipfile.ZipFile(out / "checkpoint-4" / "optimizer.bin") as zf:
        # torch 2.5.1 (transformers 4.46.3's pin): no .format_version; the storages' records left out
        assert zf.namelist() == ["optimizer/data.pkl", "optimizer/byteorder", "optimizer/version",
                                 "optimizer/.data/serialization_id"]
        strings = pickle_strings(zf.read("optimizer/data.pkl"))
    assert strings[:6] == ["state", "model.embed_tokens.weight", "step", "storage", "0", "cpu"]
    assert {"exp_avg", "exp_avg_sq", "param_groups", "initial_lr"} <= set(strings)
    with zipfile.ZipFile(out / "checkpoint-4" / "pytorch_model_fsdp.bin") as zf:
        keys = pickle_strings(zf.read("pytorch_model_fsdp/data.pkl"))
    assert "lm_head.weight" in keys and "model.norm.weight" in keys  # the tied head under its own name too


def test_a_sharded_state_dict_saves_dcp_directories_and_no_model_and_resumes(runner, tmp_path):
    """SHARDED_STATE_DICT: pytorch_model_fsdp_0/ and optimizer_0/ (a .distcp
    per rank and the coordinator's .metadata), no model from save_model, in
    the checkpoint or at the end, and none of _save's lines. --resume from
    checkpoint-4 (no config.json: the model is the command line's) under the
    same seed repeats the uninterrupted run's losses to the bit."""
    out = tmp_path / "out"
    job = fsdp_run(runner, out, steps="6", env=SHARDED, script=("--save_steps", "4"))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert "{'loss'" in job.stdout and "***** Running training *****" in job.stderr
    assert not re.search(r"Saving model checkpoint|Configuration saved|Model weights saved", job.stderr)
    dcp = {f"{d}/{n}" for d in ("pytorch_model_fsdp_0", "optimizer_0") for n in ("__0_0.distcp", "__1_0.distcp",
                                                                               ".metadata")}
    rest = {"scheduler.pt", "rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"}
    assert set(walk(out)) == {f"checkpoint-{s}/{n}" for s in (4, 6) for n in dcp | rest}
    metadata = (out / "checkpoint-4" / "optimizer_0" / ".metadata").read_bytes()
    named = pickle_strings(metadata)
    assert "torch.distributed.checkpoint.metadata" in named and "StorageMeta" in named  # torch 2.5.1's writer
    assert "optimizer.state.model.embed_tokens.weight.exp_avg" in named and "optimizer.param_groups" in named
    assert "mcore_data" not in named  # Megatron's planner's, not DefaultSavePlanner's
    again = tmp_path / "again"
    resumed = fsdp_run(runner, again, "--resume", str(out / "checkpoint-4"), steps="6", env=SHARDED)
    assert resumed.proc.returncode == 0, resumed.stderr[-2000:]
    whole, carried = (json.loads((d / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
                      for d in (out, again))
    assert [h["step"] for h in carried if "loss" in h] == [2, 4, 6] and carried == whole
