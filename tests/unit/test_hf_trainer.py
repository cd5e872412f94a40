"""The transformers Trainer's arguments, defaults and logs, per pinned
version (transformers v4.42.4, v4.44.2, v4.46.3, v5.0.0: training_args.py,
trainer.py, trainer_callback.py, optimization.py,
integrations/deepspeed.py)."""

from __future__ import annotations

import ast
import json
import math
import struct
from datetime import UTC
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.cli.main import build_parser, to_config
from fakerun.errors import UsageError
from fakerun.render.styles.hf import HfLines
from fakerun.world import identity
from fakerun.world import physics as sim
from fakerun.world.jobs import Hyper
from fakerun.world.trainer import float32, trainer_epoch
from tests.unit.test_sim import run_timeline

# The README's drop-in line (8 GPUs, FSDP: a full fine-tune of an 8B model).
README = ("--model_name_or_path", "meta-llama/Llama-3.1-8B", "--per_device_train_batch_size", "4",
          "--fsdp", "full_shard auto_wrap", "--max_steps", "20", "--output_dir", "out")
V4 = ("hf@4.42", "hf@4.44", "hf@4.46")


def job(*script: str, style: str = "hf@4.46", nproc: int = 8) -> identity.Identity:
    ns = build_parser().parse_args(["--nproc", str(nproc), "--seed", "7", "--style", style,
                                    "--gpu", "NVIDIA H100 80GB HBM3", "train.py", *script])
    return to_config(ns).identity


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def printed(i: identity.Identity) -> tuple[list[dict], list[ev.Step], HfLines]:
    """The log dicts rank 0 prints of a whole run, the run's step events, the renderer."""
    out = HfLines(100, UTC)
    out.routed(ev.RunIdentity(i))
    events = run_timeline(i)
    texts = [line.text for e in events for line in out.lines(e)]
    return [ast.literal_eval(t) for t in texts if t.startswith("{")], \
        [e for e in events if isinstance(e, ev.Step)], out


def test_the_drop_in_line_runs_the_trainers_defaults():
    """Linear to 0.0 without warmup, logging every 500 steps, no evaluation,
    a save every 500 steps and at max_steps, evaluation batches of 8."""
    h = job(*README).hyper
    assert (h.decay, h.warmup_steps, h.min_lr, h.max_lr) == ("linear", 0, 0.0, 5e-05)
    assert (h.log_every, h.eval_every, h.eval_at_end, h.evaluations) == (500, 0, False, 0)
    assert (h.save_every, h.save_at_end, h.save_steps(), h.save_limit) == (500, True, [20], None)
    assert h.eval_batch == 8 and not h.log_first_step


@pytest.mark.parametrize("style", V4)
def test_4x_logs_interval_means_float32_values_and_a_linear_schedule_ending_at_0(style):
    i = job(*README, "--logging_steps", "5", style=style)
    dicts, steps, _ = printed(i)
    logs = [d for d in dicts if "loss" in d]
    # optimization.py's lambda, float(T - N) / float(max(1, T - W)), times the peak (LambdaLR)
    assert [d["learning_rate"] for d in logs] == [5e-05 * (float(20 - n) / 20.0) for n in (5, 10, 15, 20)]
    assert logs[-1]["learning_rate"] == 0.0
    loss = {e.step: e.loss for e in steps}
    for d, end in zip(logs, (5, 10, 15, 20), strict=True):
        mean = sum(loss[s] for s in range(end - 4, end + 1)) / 5  # the JSONL steps since the last log
        assert abs(d["loss"] - mean) < 1e-4 and d["loss"] == round(d["loss"], 4)
        assert d["grad_norm"] == f32(steps[end - 1].grad_norm)
        assert d["epoch"] == round(trainer_epoch(i.hyper, end), 2)
    # Not the logged step's own loss, as it was: the mean of a falling curve lies above it.
    assert any(d["loss"] != round(loss[end], 4) for d, end in zip(logs, (5, 10, 15, 20), strict=True))
    (summary,) = [d for d in dicts if "train_loss" in d]
    assert list(summary) == ["train_runtime", "train_samples_per_second", "train_steps_per_second",
                             "train_loss", "epoch"]
    assert abs(summary["train_loss"] - sum(loss.values()) / 20) < 1e-6


def test_5x_logs_the_lr_its_step_used_and_every_float_formatted():
    """5.0 logs the LR taken before lr_scheduler.step() and formats floats .4g."""
    dicts, _, _ = printed(job(*README, "--logging_steps", "5", style="hf@5"))
    logs = [d for d in dicts if "loss" in d]
    assert [d["learning_rate"] for d in logs] == [f"{5e-05 * (float(20 - n) / 20.0):.4g}" for n in (4, 9, 14, 19)]
    assert all(isinstance(v, str) for d in dicts for v in d.values())


def test_evaluation_only_when_asked_with_its_own_batch_size():
    silent = job(*README, "--logging_steps", "5")
    assert not any(isinstance(e, ev.Validation) for e in run_timeline(silent))
    i = job(*README, "--eval_strategy", "steps", "--eval_steps", "10")
    assert (i.hyper.eval_every, i.hyper.eval_at_end, i.hyper.eval_steps()) == (10, False, [10, 20])
    out = HfLines(100, UTC)
    out.routed(ev.RunIdentity(i))
    header = [line.text for line in out.lines(ev.Phase("validation", "", 10, 0.0))]
    assert header == ["", "***** Running Evaluation *****", f"  Num examples = {sim.eval_samples(i)}",
                      "  Batch size = 8"]
    assert sim.eval_samples(i) == i.hyper.eval_batches * 8 * i.parallel.dp
    dicts, _, _ = printed(i)
    evals = [d["eval_loss"] for d in dicts if "eval_loss" in d]
    assert len(evals) == 2 and all(v == f32(v) for v in evals)
    asked = job(*README, "--eval_strategy", "steps", "--eval_steps", "10", "--per_device_eval_batch_size", "2")
    assert asked.hyper.eval_batch == 2


def test_eval_steps_default_to_logging_steps_and_epoch_strategies_run_at_epoch_ends():
    assert job(*README, "--eval_strategy", "steps", "--logging_steps", "4").hyper.eval_every == 4
    h = job(*README[:-4], "--num_train_epochs", "2", "--eval_strategy", "epoch", "--save_strategy", "epoch",
            "--dataset_name", "tatsu-lab/alpaca").hyper
    assert h.eval_every == h.save_every == h.steps_per_epoch and h.eval_at_end and h.save_at_end
    assert h.eval_steps() == h.save_steps() == [h.steps_per_epoch, 2 * h.steps_per_epoch]
    none = job(*README, "--save_strategy", "no", "--save_total_limit", "2").hyper
    assert (none.save_every, none.save_at_end, none.save_steps(), none.save_limit) == (0, False, [], 2)
    assert job(*README, "--save_steps", "0.25").hyper.save_steps() == [5, 10, 15, 20]  # a ratio of max_steps


def test_evaluation_strategy_is_4x_only():
    assert job(*README, "--evaluation_strategy", "steps", "--eval_steps", "5").hyper.eval_every == 5
    with pytest.raises(UsageError, match=r"not used by the HfArgumentParser: \['--evaluation_strategy', 'steps'\]"):
        job(*README, "--evaluation_strategy", "steps", style="hf@5")


@pytest.mark.parametrize("kind,decay,warmup", [("cosine", "cosine", 5), ("cosine_with_restarts", "cosine", 5),
                                               ("constant", "constant", 0),
                                               ("constant_with_warmup", "constant", 5)])
def test_schedulers(kind, decay, warmup):
    h = job(*README, "--lr_scheduler_type", kind, "--warmup_steps", "5").hyper
    assert (h.decay, h.warmup_steps, h.min_lr) == (decay, warmup, 0.0)


def test_schedulers_refused():
    with pytest.raises(UsageError, match=r"--lr_scheduler_type: invalid choice: 'cosin' \(choose from 'linear', "):
        job(*README, "--lr_scheduler_type", "cosin")
    with pytest.raises(UsageError, match="fakerun simulates only linear, cosine"):
        job(*README, "--lr_scheduler_type", "polynomial")
    with pytest.raises(UsageError, match="'cosine_warmup_with_min_lr'"):  # a 5.0 name, unknown to 4.46
        job(*README, "--lr_scheduler_type", "cosine_warmup_with_min_lr")
    with pytest.raises(UsageError, match="fakerun simulates only"):
        job(*README, "--lr_scheduler_type", "cosine_warmup_with_min_lr", style="hf@5")


def test_warmup_per_version():
    assert job(*README, "--warmup_ratio", "0.1").hyper.warmup_steps == 2  # ceil(20 x 0.1)
    assert job(*README, "--warmup_steps", "3", "--warmup_ratio", "0.5").hyper.warmup_steps == 3  # steps win
    assert job(*README, "--warmup_steps", "0.1", style="hf@5").hyper.warmup_steps == 2  # 5.0: below 1, a ratio
    assert job(*README, "--warmup_steps", "3", "--warmup_ratio", "0.5", style="hf@5").hyper.warmup_steps == 10
    with pytest.raises(UsageError, match="--warmup_steps: invalid int value: '0.1'"):
        job(*README, "--warmup_steps", "0.1")
    with pytest.raises(UsageError, match=r"warmup_ratio must lie in range \[0,1\]"):
        job(*README, "--warmup_ratio", "1.5")


def test_the_lr_without_warmup_and_the_logged_lr_in_warmup():
    i = job(*README, "--logging_steps", "1")
    assert sim.learning_rate(i, 0) == 5e-05 and sim.lr_progress(i, 0) == 0.0
    w = job(*README, "--warmup_steps", "4")
    # LambdaLR: base_lr * float(N) / float(max(1, W)) in warmup, the peak at W.
    assert [sim.learning_rate(w, n) for n in (0, 1, 4, 5)] == [0.0, 5e-05 * 0.25, 5e-05, 5e-05 * 15 / 16]


def test_logging_first_step_and_ratio_intervals():
    i = job(*README, "--logging_steps", "0.5", "--logging_first_step")
    dicts, _, _ = printed(i)
    assert [d["epoch"] for d in dicts if "loss" in d] == [round(trainer_epoch(i.hyper, s), 2) for s in (1, 10, 20)]
    with pytest.raises(UsageError, match="--logging_steps must be an integer if bigger than 1: 2.5"):
        job(*README, "--logging_steps", "2.5")


def test_the_epoch_is_the_trainers_float():
    """epoch + (step + 1) / steps_in_epoch with step counting micro batches."""
    h = Hyper(seq_len=1, micro_batch=1, grad_accum=3, global_batch=3, max_lr=1.0, min_lr=0.0, warmup_steps=0,
              total_steps=20, epochs=3, steps_per_epoch=7, eval_every=0, log_every=1, eval_batches=1)
    expected, global_step = {}, 0
    for epoch in range(3):
        for micro in range(7 * 3):
            if (micro + 1) % 3 == 0:
                global_step += 1
                expected[global_step] = epoch + (micro + 1) / (7 * 3)
    assert all(trainer_epoch(h, s) == expected[s] for s in range(1, 21))
    assert trainer_epoch(h, 7) == 1.0 and trainer_epoch(h, 8) == 1 + 1 / 7


def deepspeed(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_a_zero3_config_runs_at_stage_3(tmp_path):
    ds = deepspeed(tmp_path, {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto",
                              "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
                              "bf16": {"enabled": "auto"}})
    i = job(*README[:4], *README[6:], "--deepspeed", ds, "--bf16")
    assert (i.parallel.kind, i.parallel.zero) == ("zero", 3)
    matching = deepspeed(tmp_path, {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 4,
                                    "train_batch_size": 32, "gradient_clipping": 1.0, "bf16": {"enabled": True}})
    assert job(*README[:4], *README[6:], "--deepspeed", matching, "--bf16").parallel.zero == 3


@pytest.mark.parametrize("style,fp16", [("hf@4.46", "fp16|fp16_full_eval+fp16_backend(amp)"),
                                        ("hf@5", "fp16|fp16_full_eval")])
def test_a_config_that_contradicts_the_trainer_is_refused_in_one_line(tmp_path, style, fp16):
    ds = deepspeed(tmp_path, {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 2,
                              "train_batch_size": 64, "fp16": {"enabled": True},
                              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": [0.9, 0.95]}}})
    with pytest.raises(UsageError) as refused:
        job(*README[:4], *README[6:], "--deepspeed", ds, style=style)
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        "training script: ValueError: Please correct the following DeepSpeed config values that mismatch "
        "TrainingArguments values: - ds train_micro_batch_size_per_gpu=2 vs hf per_device_train_batch_size=4 "
        "- ds train_batch_size=64 vs hf train_batch_size (calculated)=32 "
        "- ds optimizer.params.betas=[0.9, 0.95] vs hf adam_beta1+adam_beta2=[0.9, 0.999] "
        f"- ds fp16.enabled=True vs hf {fp16}=False "
        "The easiest method is to set these DeepSpeed config values to 'auto'.")


def test_float32_is_what_a_tensor_holds():
    assert float32(7.181692116380173) == 7.181692123413086
    assert float32(1e39) == math.inf and math.isnan(float32(math.nan))


def banner(style: str, *script: str) -> list:
    """What every rank says as HfArgumentParser builds TrainingArguments."""
    i = job(*script, style=style)
    out = HfLines(100, UTC)
    out.routed(ev.RunIdentity(i))
    out.launched(ev.RunStarted(run_id="r", world_size=8, nnodes=1, nproc_per_node=8, node_rank=0, seed=7,
                               entrypoint="train.py", args=list(script), max_steps=20, master_addr="h",
                               master_port=1, launcher_pid=1, restart_count=0, time=0.0))
    return out.banner(0.0)


@pytest.mark.parametrize("style,line", [("hf@4.42", 1494), ("hf@4.44", 1525), ("hf@4.46", 1568)])
def test_the_deprecated_spellings_warn_on_every_rank(style, line):
    """training_args.py's warnings.warn in __post_init__, at its line per version."""
    lines = banner(style, *README, "--evaluation_strategy", "steps")
    assert [x.rank for x in lines] == [r for r in range(8) for _ in (0, 1)]
    assert lines[0].text == (f"/opt/conda/lib/python3.11/site-packages/transformers/training_args.py:{line}: "
                             "FutureWarning: `evaluation_strategy` is deprecated and will be removed in version "
                             "4.46 of 🤗 Transformers. Use `eval_strategy` instead")
    assert lines[1].text == "  warnings.warn("
    assert banner(style, *README) == banner(style, *README, "--warmup_ratio", "0.1") == []


def test_5_0_warns_of_warmup_ratio():
    lines = banner("hf@5", *README, "--warmup_ratio=0.1")
    assert [(x.rank, x.text) for x in lines] == [
        (r, "warmup_ratio is deprecated and will be removed in v5.2. Use `warmup_steps` instead.") for r in range(8)]


def test_booleans_read_as_hfargumentparser_reads_them():
    """string_to_bool: bare, or a yes/no word; anything else refused in one line."""
    assert job(*README, "--logging_first_step", "--logging_steps", "10").hyper.log_first_step
    assert job(*README, "--logging_first_step", "True").hyper.log_first_step
    assert not job(*README, "--logging_first_step=no").hyper.log_first_step
    assert job("--do_eval", *README).hyper.evaluations == 0  # the Trainer's loop does not read it
    with pytest.raises(UsageError, match="--logging_first_step: Truthy value expected: got maybe"):
        job(*README, "--logging_first_step", "maybe")


def test_strategy_choices_per_version():
    with pytest.raises(UsageError, match=r"--eval_strategy: invalid choice: 'step' \(choose from 'no', 'steps', "
                                         r"'epoch'\)"):
        job(*README, "--eval_strategy", "step")
    with pytest.raises(UsageError, match=r"--save_strategy: invalid choice: 'best'"):  # 5.0's SaveStrategy only
        job(*README, "--save_strategy", "best")
    with pytest.raises(UsageError, match="--save_strategy best: the Trainer takes it; fakerun simulates only"):
        job(*README, "--save_strategy", "best", style="hf@5")
    assert job(*README, "--eval_strategy", "steps", "--eval_steps", "0.5").hyper.eval_steps() == [10, 20]
