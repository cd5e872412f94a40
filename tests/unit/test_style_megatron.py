"""The megatron renderer's exact strings, against lines composed from
NVIDIA/Megatron-LM core_v0.10.0's formats (megatron/training/training.py:
training_log, evaluate_and_print_results; megatron/training/utils.py:
report_memory; megatron/training/checkpointing.py: save_checkpoint;
megatron/core/timers.py: Timers.log) and real Megatron logs, and who prints
them when the run is split over tensor and pipeline parallelism."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun import texts
from fakerun.cli.main import build_parser, to_config
from fakerun.config import script_args as scriptargs
from fakerun.coordinator.timeline import end_of_epoch_seconds
from fakerun.errors import UsageError
from fakerun.render.styles.megatron import MegatronLines
from fakerun.render.styles.megatron_args import Cadence, Shapes, arguments, interval
from fakerun.render.styles.megatron_formats import (
    Flavour,
    Iteration,
    args_block,
    iteration_line,
    memory_report,
    save_lines,
    timers_block,
    validation_block,
)
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.megatron import launch_args
from fakerun.world.memory import Parallelism

MIB = 1024 * 1024
DATA = texts.load("style-megatron")
T0 = 1732219121.0  # 2024-11-21 19:58:41 UTC


def test_the_iteration_line_of_the_reference():
    # Composed from training_log's format (core_v0.10.0 megatron/training/training.py):
    # bf16 (loss scale 1.0), with --log-throughput.
    line = iteration_line(Iteration("2024-11-21 20:05:41", 100, 500000, 102400, 9418.3, 431.7, 3e-05, 1024,
                                    6.714305, 1.482))
    assert line == (" [2024-11-21 20:05:41] iteration      100/  500000 | consumed samples:       102400 | "
                    "elapsed time per iteration (ms): 9418.3 | throughput per GPU (TFLOP/s/GPU): 431.7 | "
                    "learning rate: 3.000000E-05 | global batch size:  1024 | lm loss: 6.714305E+00 | "
                    "loss scale: 1.0 | grad norm: 1.482 | number of skipped iterations:   0 | "
                    "number of nan iterations:   0 |")


def test_an_iteration_line_of_a_real_core_r0_10_log():
    # A published megatron_r0.10.0 Llama-2-7B run (4090, TP=1 PP=4, GBS 128).
    line = iteration_line(Iteration("2025-08-01 09:31:44", 1, 5000, 128, 33186.0, 91.0, 6.976744e-08, 128,
                                    10.45013, 35.543))
    assert line == (" [2025-08-01 09:31:44] iteration        1/    5000 | consumed samples:          128 | "
                    "elapsed time per iteration (ms): 33186.0 | throughput per GPU (TFLOP/s/GPU): 91.0 | "
                    "learning rate: 6.976744E-08 | global batch size:   128 | lm loss: 1.045013E+01 | "
                    "loss scale: 1.0 | grad norm: 35.543 | number of skipped iterations:   0 | "
                    "number of nan iterations:   0 |")


def test_fp16_iteration_lines_of_real_logs_with_skips():
    # Two published fp16 runs (Megatron-LM issues and guides): an iteration the scaler
    # skipped has no lm loss (nothing stepped) and no grad norm; one skip in an interval
    # of ten keeps both, and shows the halved scale.
    skipped = iteration_line(Iteration("2024-08-01 09:44:55", 1, 5, 32, 3902.7, 0.2, 6e-05, 32, None, None,
                                       4294967296.0, 1))
    assert skipped == (" [2024-08-01 09:44:55] iteration        1/       5 | consumed samples:           32 | "
                       "elapsed time per iteration (ms): 3902.7 | throughput per GPU (TFLOP/s/GPU): 0.2 | "
                       "learning rate: 6.000000E-05 | global batch size:    32 | loss scale: 4294967296.0 | "
                       "number of skipped iterations:   1 | number of nan iterations:   0 |")
    one = iteration_line(Iteration("2024-09-03 16:02:57", 50, 500000, 51200, 12056.1, 878.5, 4.744186e-06, 1024,
                                   8.219823, 35.929, 131072.0, 1))
    assert one == (" [2024-09-03 16:02:57] iteration       50/  500000 | consumed samples:        51200 | "
                   "elapsed time per iteration (ms): 12056.1 | throughput per GPU (TFLOP/s/GPU): 878.5 | "
                   "learning rate: 4.744186E-06 | global batch size:  1024 | lm loss: 8.219823E+00 | "
                   "loss scale: 131072.0 | grad norm: 35.929 | number of skipped iterations:   1 | "
                   "number of nan iterations:   0 |")


def test_the_validation_block_of_the_reference():
    dashes = "-" * 96
    assert validation_block("iteration 2000", 2.481935) == [
        dashes, " validation loss at iteration 2000 | lm loss value: 2.481935E+00 | lm loss PPL: 1.196439E+01 | ",
        dashes]
    assert validation_block("iteration 9 on validation set", 25.0)[1].endswith("lm loss PPL: 4.851652E+08 | ")


def test_the_timers_of_the_reference():
    assert timers_block([("model-and-optimizer-setup", 123.15, 123.15),
                         ("train/valid/test-data-iterators-setup", 114.59, 114.59)]) == [
        "(min, max) time across ranks (ms):",
        "    model-and-optimizer-setup ......................: (123.15, 123.15)",
        "    train/valid/test-data-iterators-setup ..........: (114.59, 114.59)"]
    assert timers_block([("save-checkpoint", 41863.22, 41863.48)])[1] == \
        "    save-checkpoint ................................: (41863.22, 41863.48)"


def test_the_memory_report_of_the_reference():
    report = memory_report("(after 10 iterations)", 1464.33154296875 * MIB, 1464.3408203125 * MIB, 1576 * MIB)
    assert f"[Rank 0] {report}" == ("[Rank 0] (after 10 iterations) memory (MB) | allocated: 1464.33154296875 | "
                                    "max allocated: 1464.3408203125 | reserved: 1576.0 | max reserved: 1576.0")


def test_the_checkpoint_lines_of_the_reference():
    assert save_lines(2000, "/lustre/ckpt/llama3-8b", "", "", " [ t 1/2, p 1/1 ]") == (
        "saving checkpoint at iteration    2000 to /lustre/ckpt/llama3-8b in torch_dist format",
        "  successfully saved checkpoint from iteration    2000 to /lustre/ckpt/llama3-8b [ t 1/2, p 1/1 ]")
    stamp = "[2026-01-12 09:14:03.512845] "
    assert save_lines(2000, "/ckpt", stamp, stamp, "")[1] == \
        "  [2026-01-12 09:14:03.512845] successfully saved checkpoint from iteration    2000 to /ckpt"


def test_arguments_are_dotted_to_column_48_and_sorted_case_insensitively():
    block = args_block({"train_iters": 1000, "micro_batch_size": 4, "lr_decay_style": "cosine", "lr": 0.0003})
    assert block == ["------------------------ arguments ------------------------",
                     "  lr .............................................. 0.0003",
                     "  lr_decay_style .................................. cosine",
                     "  micro_batch_size ................................ 4",
                     "  train_iters ..................................... 1000",
                     "-------------------- end of arguments ---------------------"]


def test_the_theoretical_memory_of_a_real_core_r0_10_log():
    # The same r0.10.0 run: Llama-2-7B, TP=1 PP=4 on 8 GPUs (DP=2), distributed optimizer.
    model = catalog.find(catalog.models(), "Llama-2-7b-hf", "model")
    shapes = Shapes(model, Parallelism(1, 4, 2, 1), 4096, 11008, False, False, False, False)
    assert shapes.theoretical_memory(block=False) == [
        "Number of parameters in transformer layers in billions:  6.48",
        "Number of parameters in embedding layers in billions: 0.26",
        "Total number of parameters in billions: 6.74",
        "Number of parameters in most loaded shard in billions: 1.7502",
        "Number of parameters in other shards in billions: 1.6191",
        "Theoretical memory footprints: weight and optimizer=20029.52 MB"]


@pytest.mark.parametrize("name", ["Llama-3.1-8B", "Llama-3.2-1B", "Qwen2.5-7B", "Mistral-7B-v0.1",
                                  "Mixtral-8x7B-v0.1", "HAL-9001-8B"])
def test_the_shards_add_up_to_the_published_parameter_count(name):
    model = catalog.find(catalog.models(), name, "model")
    ident = dataclasses.replace(_ident(), model=model, parallel=Parallelism(1, 1, 8, 1))
    assert Shapes.of(ident, DATA).shard_params(0) == model.params


def test_the_vocabulary_pads_to_a_multiple_of_128_times_tp():
    # Megatron's own GPT-2 line: " > padded vocab (size: 50257) with 47 dummy tokens (new size: 50304)".
    model = catalog.find(catalog.models(), "gpt2-xl", "model")
    ident = dataclasses.replace(_ident(), model=model)
    assert Shapes.of(ident, DATA).padded_vocab == 50304
    ident = dataclasses.replace(ident, parallel=Parallelism(2, 1, 1, 1))
    assert Shapes.of(ident, DATA).padded_vocab == 50432


def test_versions():
    # save_checkpoint's "[ t 1/2, p 1/1 ]" from core_v0.10.0 (megatron/training/checkpointing.py)
    assert Flavour.of("0.10.0") == Flavour(micro=False, shard_suffix=True, core_logger=True,
                                           microbatches="microbatches", block=False, save_memory=False)
    assert Flavour.of("0.8.0").microbatches == "micro-batches" and not Flavour.of("0.8.0").core_logger
    assert Flavour.of("0.15.0").micro and Flavour.of("0.15.0").shard_suffix and not Flavour.of("0.9.0").shard_suffix


def test_eval_and_save_at_the_runs_interval_else_megatrons_default():
    hyper = _ident().hyper
    assert interval(dataclasses.replace(hyper, total_steps=600, eval_every=300)) == 300  # a fine-tune's epoch
    assert interval(dataclasses.replace(hyper, total_steps=640, eval_every=640)) == 1000
    assert interval(dataclasses.replace(hyper, total_steps=1200, eval_every=1200)) == 10000


# -- who prints, with TP=2 x PP=2 x DP=2 on 8 GPUs, ranks in Megatron's order ------
# (tp-cp-ep-dp-pp: megatron/core/parallel_state.py initialize_model_parallel)
def _ident() -> identity.Identity:
    (versions,) = [v for v in catalog.versions() if v.megatron == "0.10.0"]
    return identity.build(5, 1, 2, 12, versions=versions)


def _renderer() -> MegatronLines:
    ident = dataclasses.replace(_ident(), nproc=8, parallel=Parallelism(2, 2, 2, 1, "megatron"))
    out = MegatronLines(100, UTC)
    out.lines(ev.RunIdentity(ident))
    out.banner(T0)
    return out


def test_dp_rank_zero_ranks_count_their_shard_and_report_memory():
    out = _renderer()
    built = out.lines(ev.Phase("init", "model", 0, T0 + 5))
    counts = [(line.rank, line.text) for line in built if "number of parameters" in line.text]
    assert [(r, t.split("rank ")[1].split(":")[0]) for r, t in counts] == [
        (0, "(0, 0)"), (1, "(1, 0)"), (4, "(0, 1)"), (5, "(1, 1)")]
    logged = out.lines(_step(1, T0 + 60))
    assert logged[0].rank == 7 and "iteration        1/" in logged[0].text
    memory = [line for line in logged if line.text.startswith("[Rank ")]
    assert [line.rank for line in memory] == [0, 1, 4, 5]
    assert all(line.text.startswith(f"[Rank {line.rank}] (after 1 iterations) memory (MB)") for line in memory)
    assert {line.rank for line in logged if line.text.startswith("Number of parameters")} == {0}


def test_the_datetime_lines_keep_their_trailing_space():
    out = _renderer()
    (line,) = [x for x in out.lines(ev.Phase("init", "nccl", 0, T0)) if "datetime" in x.text]
    assert line.text == "[after megatron is initialized] datetime: 2024-11-21 19:58:41 " and line.rank == 0


def test_the_loss_is_the_interval_mean_and_the_grad_norm_the_last():
    out = _renderer()
    out.ident = dataclasses.replace(out.ident, hyper=dataclasses.replace(out.ident.hyper, log_every=2))
    assert out.lines(_step(1, T0, loss=2.0, grad_norm=9.0)) == []
    (line, *_) = out.lines(_step(2, T0 + 60, loss=3.0, grad_norm=1.25))
    assert "lm loss: 2.500000E+00 |" in line.text and "grad norm: 1.250 |" in line.text


def test_a_gpu_without_bf16_runs_megatron_in_fp16_with_a_loss_scaler():
    """On V100s: fp16 with --initial-loss-scale 65536, Megatron's own layers
    (Transformer Engine needs Ampere); an overflow first spends the
    hysteresis (skipped, scale kept), the next halves the scale; the interval's
    loss is over the iterations that stepped."""
    (versions,) = [v for v in catalog.versions() if v.megatron == "0.10.0"]
    ident = identity.build(5, 1, 2, 12, versions=versions, gpu="Tesla V100-SXM2-32GB")
    out = MegatronLines(100, UTC)
    out.lines(ev.RunIdentity(ident))
    banner = [line.text for line in out.banner(T0)]
    assert banner[:2] == ["WARNING: Setting args.check_for_nan_in_loss_and_grad to False since dynamic loss "
                          "scaling is being used", "using torch.float16 for parameters ..."]
    assert "  fp16 ............................................ True" in banner
    assert "  transformer_impl ................................ local" in banner
    assert "  initial_loss_scale .............................. 65536.0" in banner
    out.ident = dataclasses.replace(out.ident, hyper=dataclasses.replace(out.ident.hyper, log_every=2))
    lines = [out.lines(dataclasses.replace(_step(n, T0 + 60 * n, loss=float(n), grad_norm=float(n)),
                                           overflow=n in (2, 3, 4)))
             for n in range(1, 7)]
    logged = [x[0].text for x in lines if x]
    assert "lm loss: 1.000000E+00 | loss scale: 65536.0 | number of skipped iterations:   1 |" in logged[0]
    assert "global batch size: " in logged[1] and "lm loss" not in logged[1] and "grad norm" not in logged[1]
    assert "loss scale: 16384.0 | number of skipped iterations:   2 |" in logged[1]
    assert "lm loss: 5.500000E+00 | loss scale: 16384.0 | grad norm: 6.000 | number of skipped iterations:   0" \
        in logged[2]


def test_a_non_finite_loss_never_logs():
    out = _renderer()
    assert out.lines(_step(1, T0, loss=float("nan"))) == []


def test_a_save_without_validation_is_the_sigterm_exit():
    out = _renderer()
    saving = out.lines(ev.Phase("checkpoint", "", 7, T0 + 100))
    assert saving[0].text == "saving checkpoint at iteration       7 to checkpoints/" \
        f"{out.ident.slug} in torch_dist format"
    saved = out.lines(ev.Checkpoint(7, 1, "checkpoints/x/epoch_1_step_7/", 2, 1, 1, 12.5, T0 + 112.5))
    assert saved[-1].text == "[exiting program after receiving SIGTERM.] datetime: 2024-11-21 20:00:33 "
    assert [line.rank for line in saved if "save-checkpoint" in line.text] == [7]


def _step(step: int, when: float, loss: float = 2.0, grad_norm: float = 1.0) -> ev.Step:
    return ev.Step(step, 12, loss, loss, loss, grad_norm, lr=3e-4, step_time_s=1.5, time=when)


def test_the_launch_line_reads_as_megatrons_namespace():
    given = launch_args(["--num-layers", "24", "--lr", "3e-4", "--bf16", "--data-path", "/d/x_text_document",
                         "--save=/ckpt/gpt-1b", "--split", "949,50,1", "--data-path2", "0.5", "/a", "0.5", "/b"])
    assert given == {"num_layers": 24, "lr": 0.0003, "bf16": True, "data_path": ["/d/x_text_document"],
                     "save": "/ckpt/gpt-1b", "split": "949,50,1", "data_path2": ["0.5", "/a", "0.5", "/b"]}


def test_the_runs_figures_win_over_the_launch_line():
    ident = _ident()
    values = arguments(ident, Shapes.of(ident, DATA), Cadence(1000, 1000),
                       {"train_iters": 5, "split": "949,50,1", "save": "/c"})
    assert values["train_iters"] == ident.hyper.total_steps
    assert (values["split"], values["save"]) == ("949,50,1", "/c")


def _megatron_activation(s, b, h, ffn, layers, pp, tp, vocab, microbatches):
    """core_v0.10.0 theoretical_memory_usage.compute_activation_memory, transcribed."""
    memory = s * b * h * (18 + 4 * ffn / h) * layers + 8 * s * b * pp + s * b * h * pp
    if pp > 1:
        memory *= min(1, microbatches / pp)
    if pp == 1:
        memory += s * b * h * 4 * (1 + vocab / h)
    return memory / tp


@pytest.mark.parametrize("tp,pp,microbatches", [(2, 1, 4), (4, 2, 1), (2, 4, 8)])
def test_the_activation_footprint_is_megatrons_with_sp_and_selective_recompute(tp, pp, microbatches):
    model = catalog.find(catalog.models(), "Llama-2-7b-hf", "model")
    par = Parallelism(tp, pp, 8 // (tp * pp) or 1, 1, "megatron", "selective")
    shapes = Shapes(model, par, 4096, 11008, False, False, False, False, micro=2, microbatches=microbatches)
    said = shapes.theoretical_memory(block=False)
    expected = _megatron_activation(4096, 2, 4096, 11008, 32, pp, tp, shapes.padded_vocab, microbatches)
    assert said[-1] == ""  # its print ends with "\n"
    assert f"activation={expected / 2**20:.2f} MB" in said[-2]
    layer = 4096 * 2 * 4096 * (18 + 4 * 11008 / 4096) / tp / 2**20
    assert f"Activation memory footprint per transformer layer: {layer:.1f} MB" in said
    assert (f"Number of in-flight microbatches: {min(microbatches, pp)}" in said) == (pp > 1)


def test_without_sequence_parallelism_only_0_15_reports_activations():
    model = catalog.find(catalog.models(), "Llama-2-7b-hf", "model")
    shapes = Shapes(model, Parallelism(1, 1, 8, 1, "megatron", "selective"), 4096, 11008, False, False, False,
                    False)
    assert shapes.theoretical_memory(block=False)[-1].startswith("Theoretical memory footprints: weight and "
                                                                  "optimizer=") and "activation" not in \
        shapes.theoretical_memory(block=False)[-1]
    said = shapes.theoretical_memory(block=True)
    assert "compute_activation_memory_without_sp" in said and "activation=" in said[-2]


def test_without_the_distributed_optimizer_a_parameter_takes_18_bytes():
    model = catalog.find(catalog.models(), "Llama-2-7b-hf", "model")
    plain = Shapes(model, Parallelism(1, 4, 2, 0, "megatron"), 4096, 11008, False, False, False, False)
    # The core_v0.10.0 log's shard (1.7502B) at 18 bytes instead of 6 + 12/2.
    said = plain.theoretical_memory(block=False)[-1]
    assert said.startswith("Theoretical memory footprints: weight and optimizer=")
    assert float(said.split("=")[1].removesuffix(" MB")) == pytest.approx(20029.52 * 18 / 12, abs=0.02)


# -- Megatron's arguments and their defaults (megatron/training/arguments.py) ---------
def _schedule(*flags: str) -> dict[str, object]:
    return dict(scriptargs.read("pretrain_gpt.py", ["--train-iters", "20", "--lr", "3e-4", *flags]).asked.hyper)


def test_a_launch_line_silent_on_the_schedule_runs_megatrons_defaults():
    """--lr-decay-style linear, --min-lr 0.0, --lr-warmup-iters 0,
    --eval-interval 1000, --eval-iters 100, no --save: no save at all."""
    assert _schedule() == {"decay": "linear", "min_lr": 0.0, "warmup_steps": 0, "decay_steps": None, "save_every": 0,
                           "save_at_end": False, "eval_every": 1000, "eval_at_end": True, "eval_after_loop": True,
                           "eval_batches": 100}


def test_the_schedule_flags_are_read_with_their_meaning():
    got = _schedule("--lr-decay-style", "cosine", "--min-lr", "3e-5", "--lr-warmup-fraction", "0.1",
                    "--eval-interval", "5", "--eval-iters", "3", "--save", "ck", "--save-interval", "10")
    assert got == {"decay": "cosine", "min_lr": 3e-5, "warmup_steps": 2, "decay_steps": None, "save_every": 10,
                   "save_at_end": True, "eval_every": 5, "eval_at_end": True, "eval_after_loop": True,
                   "eval_batches": 3}
    # the warmup fraction is of the decay, which --lr-decay-iters sets
    assert _schedule("--lr-decay-iters", "16", "--lr-warmup-fraction", "0.25")["warmup_steps"] == 4
    assert _schedule("--eval-iters", "0")["eval_at_end"] is False  # do_valid is False: no evaluation
    c = to_config(build_parser().parse_args(["--nproc-per-node", "2", "pretrain_gpt.py", "--num-layers", "4",
                                             "--hidden-size", "512", "--train-iters", "20",
                                             "--lr-warmup-iters", "4", "--min-lr", "1e-5", "--lr", "1e-4"]),
                  environ={})
    h = c.identity.hyper
    assert (h.decay, h.min_lr, h.warmup_steps, h.eval_every, h.save_steps()) == ("linear", 1e-5, 4, 1000, [])


@pytest.mark.parametrize("flags,said", [
    (("--save", "ck"), "--save without --save-interval"),
    (("--min-lr", "1e-3"), "--min-lr 0.001 above --lr 0.0003"),
    (("--lr-decay-style", "exponential"), "invalid choice: 'exponential' (choose from 'constant', 'linear', "
                                          "'cosine', 'inverse-square-root', 'WSD')"),
    (("--lr-decay-style", "WSD"), "--lr-decay-style WSD: fakerun simulates the constant, linear, cosine")])
def test_what_megatrons_validate_args_refuses_is_one_line(flags, said):
    with pytest.raises(UsageError, match=re.escape(said)):
        _schedule(*flags)


def _megatron_lr(max_lr, min_lr, warmup, total, gbs, iteration, style):
    """core_v0.10.0 OptimizerParamScheduler.get_lr, transcribed (steps count
    samples; `total`: the decay's iterations, --lr-decay-iters or --train-iters)."""
    num_steps, warmup_steps, decay_steps = iteration * gbs, warmup * gbs, total * gbs
    if warmup_steps > 0 and num_steps <= warmup_steps:
        return max_lr * num_steps / warmup_steps
    if style == "constant":
        return max_lr
    if num_steps > decay_steps:
        return min_lr
    ratio = (num_steps - warmup_steps) / (decay_steps - warmup_steps)
    coeff = 1.0 - ratio if style == "linear" else 0.5 * (math.cos(math.pi * ratio) + 1.0)
    return min_lr + coeff * (max_lr - min_lr)


@pytest.mark.parametrize("style,warmup,decay_iters", [("linear", 0, None), ("cosine", 0, None), ("linear", 4, None),
                                                     ("constant", 2, None), ("cosine", 2, 12), ("linear", 0, 30)])
def test_the_learning_rate_follows_megatrons_scheduler(style, warmup, decay_iters):
    ident = _ident()
    h = dataclasses.replace(ident.hyper, max_lr=3e-4, min_lr=3e-5, warmup_steps=warmup, total_steps=20, decay=style,
                            decay_steps=decay_iters)
    ident = dataclasses.replace(ident, hyper=h)
    for step in range(0, 21):
        assert sim.learning_rate(ident, step) == pytest.approx(
            _megatron_lr(3e-4, 3e-5, warmup, decay_iters or 20, h.global_batch, step, style), rel=1e-12)
    assert sim.lr_progress(ident, 0) == 0.0  # no warmup: no division by it
    # lr_progress is the LR's integral: its steps are the LR between them, to a step's curvature
    for step in range(warmup + 1, 20):
        share = (sim.lr_progress(ident, step + 1) - sim.lr_progress(ident, step)) * 3e-4
        assert min(sim.learning_rate(ident, step), sim.learning_rate(ident, step + 1)) - 1e-12 <= share <= \
            max(sim.learning_rate(ident, step), sim.learning_rate(ident, step + 1)) + 1e-12


@pytest.mark.parametrize("version,said", [
    ("0.8", "world size (6) is not divisible by tensor parallel size (4) times pipeline parallel size (1) times "
            "context parallel size (1)"),
    ("0.10", "world size (6) is not divisible by total_model_size (encoder_model_size=0 + decoder_model_size=4)"),
    ("0.15", "world size (6) is not divisible by total_model_size (total_model_size=4)")])
def test_a_world_tp_times_pp_does_not_divide_is_megatrons_assertion(version, said):
    argv = ["--nproc-per-node", "6", "--style", f"megatron@{version}", "pretrain_gpt.py",
            "--tensor-model-parallel-size", "4", "--train-iters", "10"]
    with pytest.raises(UsageError, match=re.escape(f"AssertionError: {said}")):
        to_config(build_parser().parse_args(argv), environ={})


# -- checkpoint lines per version (megatron/training/checkpointing.py) ---------------
def test_a_legacy_save_says_torch_and_the_suffix_comes_with_0_10():
    assert save_lines(4, "ck", "", "", "", "torch")[0] == "saving checkpoint at iteration       4 to ck in torch format"
    out = _renderer()
    saved = out.lines(ev.Checkpoint(7, 1, "x/iter_0000007/", 2, 1, 1, 12.5, T0 + 112.5))
    assert saved[0].text.endswith(f"to checkpoints/{out.ident.slug} [ t 1/2, p 1/2 ]")


def _launched(version: str, *args: str, output: str = "", resumed: tuple[str, int] = ("", 0),
              **hyper: object) -> MegatronLines:
    """`hyper`: what the launch line's flags set of the run's Hyper (config/megatron_schedule.py)."""
    (versions,) = [v for v in catalog.versions() if v.megatron == version]
    ident = identity.build(5, 1, 2, 12, versions=versions)
    ident = dataclasses.replace(ident, nproc=8, parallel=Parallelism(2, 2, 2, 1, "megatron"),
                                hyper=dataclasses.replace(ident.hyper, **hyper))
    out = MegatronLines(100, UTC)
    out.launched(ev.RunStarted("r", 8, 1, 8, 0, 5, "pretrain_gpt.py", list(args), 12, "h", 1, 42, 0, T0,
                               output_dir=output, resumed_from=resumed[0], resumed_step=resumed[1]))
    out.lines(ev.RunIdentity(ident))
    out.banner(T0)
    return out


@pytest.mark.parametrize("version,where", [("0.8.0", "[ t 0, p 0 ]"), ("0.9.0", "[ t 0, p 0 ]"),
                                           ("0.10.0", "[ t 1/2, p 1/2 ]"), ("0.15.0", "[ t 1/2, p 1/2 ]")])
def test_loading_says_where_from_as_each_version_does(version, where):
    out = _launched(version, "--load", "ck", "--save", "ck", "--save-interval", "4", resumed=("ck/iter_0000004", 4))
    out.lines(ev.Phase("init", "nccl", 0, T0 + 2))
    built = [line.text for line in out.lines(ev.Phase("init", "model", 0, T0 + 30))]
    infix = "" if version == "0.8.0" else "distributed "  # 0.8's default is the legacy format
    at = built.index(f" loading {infix}checkpoint from ck at iteration 4")
    assert built[at + 1:at + 3] == [" checkpoint version 3.0",
                                    f"  successfully loaded checkpoint from ck {where} at iteration 4"]
    assert built[at + 4].startswith("    load-checkpoint ....")
    assert built[-1].startswith("[after model, optimizer, and learning rate scheduler are built]")


def test_a_load_directory_without_a_tracker_starts_from_random():
    out = _launched("0.8.0", "--load", "ck/")
    out.lines(ev.Phase("init", "nccl", 0, T0 + 2))
    built = [line.text for line in out.lines(ev.Phase("init", "model", 0, T0 + 30))]
    assert "WARNING: could not find the metadata file ck/latest_checkpointed_iteration.txt " in built  # 0.8's space
    assert "    will not load any checkpoints and will start from random" in built
    assert "    load-checkpoint ................................: (0.00, 0.00)" in built


@pytest.mark.parametrize("version,args,said", [
    ("0.8.0", (), ["saving checkpoint at iteration       8 to out in torch format"]),
    ("0.8.0", ("--use-dist-ckpt", "--use-distributed-optimizer"),
     ["saving checkpoint at iteration       8 to out in torch_dist format",
      "Storing distributed optimizer sharded state of type fully_sharded_model_space"]),
    ("0.10.0", ("--no-ckpt-fully-parallel-save",),
     ["saving checkpoint at iteration       8 to out in torch_dist format",
      "Storing distributed optimizer sharded state of type dp_zero_gather_scatter"]),
    ("0.10.0", ("--ckpt-format", "torch"), ["saving checkpoint at iteration       8 to out in torch format"])])
def test_the_format_and_the_optimizer_state_as_the_version_saves_them(version, args, said):
    """Saving under fakerun's --output-dir, which stands for --save."""
    out = _launched(version, *args, output="out", total_steps=8)
    texts_ = [line.text for line in out.lines(ev.Phase("checkpoint", "", 8, T0 + 100))]
    assert texts_ == ["[after training is done] datetime: 2024-11-21 20:00:21 ", *said]  # pretrain()'s final save


def test_a_save_on_its_interval_without_an_evaluation_is_no_sigterm():
    """--save-interval 5 with Megatron's --eval-interval 1000: train() saves at
    5 and carries on; only a save off the interval before the end is the
    signal handler's."""
    out = _launched("0.10.0", "--train-iters", "12", "--save", "ck", "--save-interval", "5", save_every=5,
                    eval_every=1000)
    out.lines(ev.Phase("checkpoint", "", 5, T0 + 100))
    saved = [line.text for line in out.lines(ev.Checkpoint(5, 1, "ck/iter_0000005/", 1, 1, 1, 3.0, T0 + 103))]
    assert not any("exiting program" in t or "after training is done" in t for t in saved)
    out.lines(ev.Phase("checkpoint", "", 7, T0 + 200))
    saved = [line.text for line in out.lines(ev.Checkpoint(7, 1, "ck/iter_0000007/", 1, 1, 1, 3.0, T0 + 203))]
    assert saved[-1].startswith("[exiting program after receiving SIGTERM.] datetime: ")


def test_fakeruns_output_dir_is_where_the_lines_say_the_files_go():
    """--output-dir wins over the launch line's --save (fakerun's options win;
    the writer writes there): both save lines and the arguments name it."""
    out = _launched("0.10.0", "--save", "theirs", "--save-interval", "4", output="ours", total_steps=4)
    assert "  save ............................................ ours" in [line.text for line in out.banner(T0)]
    saving = [line.text for line in out.lines(ev.Phase("checkpoint", "", 4, T0 + 100))]
    assert "saving checkpoint at iteration       4 to ours in torch_dist format" in saving


@pytest.mark.parametrize("resumed,load", [("mg/iter_0000012", "mg"), ("mg/iter_0000012/", "mg"),
                                          ("mg/checkpoint-12/", "mg"), ("other/run", "other/run")])
def test_a_resumed_run_loads_from_the_directory_holding_its_checkpoint(resumed, load):
    """--resume (or a restart) names a checkpoint; Megatron's --load names the
    directory holding it and the tracker file."""
    out = _launched("0.10.0", output="mg", resumed=(resumed, 12))
    out.lines(ev.Phase("init", "nccl", 0, T0 + 2))
    built = [line.text for line in out.lines(ev.Phase("init", "model", 0, T0 + 30))]
    assert f" loading distributed checkpoint from {load} at iteration 12" in built


@pytest.mark.parametrize("args,said", [(("--train-iters", "12"), "False"),
                                       (("--train-iters", "12", "--sequence-parallel"), "True")])
def test_sequence_parallelism_is_on_only_where_the_launch_line_asks(args, said):
    """--sequence-parallel is a bare flag, off by default (arguments.py); a
    run fakerun drew shows it on wherever TP is (its launch line has it)."""
    banner = [line.text for line in _launched("0.10.0", *args).banner(T0)]
    assert f"  sequence_parallel ............................... {said}" in banner
    drawn = [line.text for line in _renderer().banner(T0)]
    assert "  sequence_parallel ............................... True" in drawn


def test_the_evaluation_after_training_is_timed_beside_the_loops():
    """Megatron evaluates twice after its last iteration on the interval: the
    run's length (evaluations) and the pauses the ETA counts have both."""
    ident = _ident()
    h = dataclasses.replace(ident.hyper, total_steps=10, eval_every=5, eval_at_end=True, save_every=0,
                            save_at_end=False)
    once = dataclasses.replace(ident, hyper=h)
    twice = dataclasses.replace(ident, hyper=dataclasses.replace(h, eval_after_loop=True))
    assert (once.hyper.evaluations, twice.hyper.evaluations) == (2, 3)
    extra = end_of_epoch_seconds(twice)[10] - end_of_epoch_seconds(once)[10]
    assert extra == max(sim.eval_seconds(twice, r, 10, again=True) for r in range(twice.world)) > 0
    off = dataclasses.replace(twice, hyper=dataclasses.replace(twice.hyper, total_steps=12))
    assert off.hyper.evaluations == 3  # 5, 10 and the one after training: no second one at 12
