"""The draws are jobs people run, configured as they configure them, at a
length a demo can show: checked through the world model (identity.build,
physics, the timeline) over a thousand seeds on the clusters people use,
never through subprocesses."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.cli.main import build_parser, to_config
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.protocol import tags
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock

SEEDS = range(1000)
# (nodes, GPUs per node): --nproc 1, 2, 4, 8; --nodes 2, 4, 16 of 8.
CLUSTERS = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 8), (4, 8), (16, 8)]
# What launch lines and recipes write (literal here: the test does not trust the code's tables).
FINE_TUNE_LRS = {1e-5, 2e-5, 5e-5, 1e-4, 2e-4}
PRETRAIN_LRS = {8e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 6e-4}
PRETRAIN_STEPS = {100, 150, 200, 250, 300, 400, 500, 600, 800, 1000}
ROUND_WARMUPS = {10, 20, 25, 50, 100}
ROUND_INTERVALS = {1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000}
# AWS instance types and the GPUs they carry (8 each).
INSTANCES = {"p5-48xlarge": "NVIDIA H100 80GB HBM3", "p5e-48xlarge": "NVIDIA H200",
             "p4de-24xlarge": "NVIDIA A100-SXM4-80GB", "p4d-24xlarge": "NVIDIA A100-SXM4-40GB",
             "g6e-48xlarge": "NVIDIA L40S"}


@pytest.fixture(scope="module")
def draws() -> list[identity.Identity]:
    """Every seed on every cluster: the default draw (nothing asked)."""
    return [identity.build(seed, nodes, gpus) for nodes, gpus in CLUSTERS for seed in SEEDS]


def power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def test_batch_numbers_are_round(draws):
    for i in draws:
        h = i.hyper
        assert power_of_two(h.micro_batch) and power_of_two(h.grad_accum), (i.seed, h)
        assert h.global_batch == h.micro_batch * i.parallel.dp * h.grad_accum
        assert power_of_two(h.global_batch) and power_of_two(h.seq_len), (i.seed, h)


def test_schedules_are_what_recipes_write(draws):
    for i in draws:
        h = i.hyper
        assert h.log_every in ROUND_INTERVALS
        if h.fine_tune:
            assert h.max_lr in FINE_TUNE_LRS and h.min_lr == 0.0  # the Trainer's cosine, to 0
            assert h.warmup_steps == math.ceil(0.03 * h.total_steps)  # warmup_ratio 0.03, rounded up
            assert h.eval_every == h.steps_per_epoch  # evaluated and saved at each epoch's end
        else:
            assert h.total_steps in PRETRAIN_STEPS and h.warmup_steps in ROUND_WARMUPS
            assert h.max_lr in PRETRAIN_LRS and h.min_lr == float(f"{h.max_lr / 10:.2g}")  # 10% of the peak
            assert h.eval_every in ROUND_INTERVALS | {h.total_steps} and h.total_steps % h.eval_every == 0
            assert h.evaluations <= 5


def test_epochs_agree_with_the_data(draws):
    for i in draws:
        h = i.hyper
        assert h.epochs * i.dataset.tokens >= h.total_steps * h.tokens_per_step, (i.seed, i.dataset, h)
        assert h.epochs == math.ceil(h.total_steps / h.steps_per_epoch)  # the epochs the run reaches into
        if i.dataset.use == "finetune":  # whole epochs of an instruction set, as fine-tunes run
            assert h.total_steps == h.epochs * h.steps_per_epoch and h.epochs in (2, 3)
            assert h.steps_per_epoch >= 10
        else:  # a sliver of a corpus of billions of tokens
            assert h.epochs == 1 and h.total_steps < h.steps_per_epoch


def test_no_joke_unless_asked(draws):
    for i in draws:
        assert (i.model.kind, i.dataset.kind, i.gpu.kind) == ("real", "real", "real"), i.seed


def test_hostnames_fit_the_hardware(draws):
    for i in draws:
        assert len(set(i.hosts)) == i.nnodes
        for host in i.hosts:
            if host.startswith("dgx"):  # NVIDIA's NVLink boxes only
                assert (i.gpu.vendor, i.gpu.nvlink) == ("nvidia", "yes"), (host, i.gpu.name)
            if "-st-" in host:  # an AWS instance carries one GPU type
                instance = host.split("-st-")[1].rsplit("-", 1)[0]
                assert INSTANCES[instance] == i.gpu.name, (host, i.gpu.name)
    pcie = [h for i in draws if i.gpu.nvlink == "no" for h in i.hosts]
    assert pcie and not [h for h in pcie if "dgx" in h]


def test_both_kinds_of_job_are_drawn_on_every_cluster_but_one_gpu(draws):
    """One GPU pre-trains nothing in a demo's length at a real recipe's batch
    (a quarter million tokens a step and more): it fine-tunes."""
    for nodes, gpus in CLUSTERS:
        uses = {i.dataset.use for i in draws if (i.nnodes, i.nproc) == (nodes, gpus)}
        assert uses == ({"finetune"} if nodes * gpus == 1 else {"pretrain", "finetune"}), (nodes, gpus)


def test_pre_training_takes_a_base_model_and_a_real_batch(draws):
    pre = [i for i in draws if i.dataset.use == "pretrain"]
    assert pre and not [i.model.name for i in pre if i.model.tuned]
    assert min(i.hyper.tokens_per_step for i in pre) >= 2**18


def test_default_draws_last_two_to_four_minutes(draws):
    """Start-up, every step, every validation and checkpoint, the export:
    the seeds' 2-4 minute run at the job's physical pace; on several nodes,
    a big model's run, 4-10 minutes (its weights take minutes to load and save)."""
    def allowed(i: identity.Identity) -> tuple[float, float]:
        return (240, 600) if i.nnodes > 1 and i.model.params >= 30e9 else (120, 240)
    lengths = {(i.nnodes, i.nproc, i.seed): (sim.run_seconds(i), allowed(i)) for i in draws}
    outside = {k: round(v) for k, (v, (low, high)) in lengths.items() if not low <= v <= high}
    assert not outside


def test_big_models_appear_on_clusters_that_hold_them(draws):
    """70B-class models on 16 nodes, never on one (where they do not fit a demo's length)."""
    def names(nodes: int) -> set[str]:
        return {i.model.name for i in draws if i.nnodes == nodes and i.model.params >= 60e9}
    assert len(names(16)) >= 2 and not names(1)


def test_a_request_keeps_its_real_length():
    """Steps or a model asked for: the job's real figures, however long."""
    long = identity.build(1, 1, 8, 5000)
    assert long.hyper.total_steps == 5000 and sim.run_seconds(long) > 240
    big = identity.build(1, 4, 8, model="Llama-3.1-70B", gpu="NVIDIA H100 80GB HBM3")
    assert big.model.name == "Llama-3.1-70B" and sim.run_seconds(big) > 240


# -- the simulated run takes the time the draw computed --------------------------
def run(i: identity.Identity, clock: VirtualClock) -> list:
    """Every collective of the training script, in its order, through a
    Timeline: each rank's simulated work as physics gives it."""
    timeline, out = Timeline(i, clock), []

    def done(tag: str, op: str, step: int, work: Callable[[int], float] | None = None,
             values: Callable[[int], list[float]] | None = None, numel: int = 0) -> None:
        ranks = range(i.world)
        contributions = {r: values(r) if values else [] for r in ranks}
        result = [sum(c[k] for c in contributions.values()) / i.world for k in range(len(contributions[0]))]
        events, _, _ = timeline.on_collective(Completed(
            tag, op, step, numel, {r: work(r) if work else 0.0 for r in ranks}, contributions, result, 0))
        out.extend(events)

    init = sim.init_seconds(i)
    done(tags.INIT_PROCESS_GROUP, "barrier", 0, lambda r: init[tags.INIT_PROCESS_GROUP])
    done(tags.BROADCAST_PARAMETERS, "broadcast", 0, numel=sim.grad_numel(i))
    for stage in tags.INIT_STAGES:
        done(stage, "barrier", 0, lambda r, s=stage: init[s])
    done(tags.PHASE_TRAIN, "barrier", 0)
    for step in range(1, i.hyper.total_steps + 1):
        done(tags.TRAIN_STEP, "all_reduce", step, lambda r, s=step: sim.compute_seconds(i, s),
             lambda r, s=step: [sim.local_loss(i, r, s), sim.local_grad_norm(i, r, s)], sim.grad_numel(i))
        if i.hyper.evaluates_after(step):
            done(tags.PHASE_VALIDATION, "barrier", step)
            done(tags.VALIDATION, "all_reduce", step, lambda r, s=step: sim.eval_seconds(i, r, s),
                 lambda r, s=step: [sim.local_val_loss(i, r, s)])
            done(tags.phase(tags.CHECKPOINT), "barrier", step)
            done(tags.CHECKPOINT, "barrier", step, lambda r, s=step: sim.checkpoint_seconds(i, r, s))
    last = i.hyper.total_steps
    done(tags.phase(tags.EXPORT), "barrier", last)
    done(tags.EXPORT, "barrier", last, lambda r: sim.export_seconds(i, r, last))
    done(tags.PHASE_SUMMARY, "barrier", 0)
    return out


def test_the_simulated_run_takes_the_length_the_draw_computed(draws):
    for i in draws[::500]:  # both kinds, every cluster
        clock = VirtualClock(0.0, UTC)
        run(i, clock)
        assert clock.now == pytest.approx(sim.run_seconds(i), rel=0.05), (i.seed, i.nnodes, i.nproc)


# -- the fine-tune story -----------------------------------------------------------
def fine_tune(*script: str) -> identity.Identity:
    # FSDP: a full fine-tune of an 8B model does not fit 80 GB GPUs under plain DDP; and at the
    # Trainer's default batch (8 a device) only with its activations recomputed.
    ns = build_parser().parse_args(["--nproc", "8", "--seed", "3", "--gpu", "NVIDIA H100 80GB HBM3", "train.py",
                                    "--model_name_or_path", "meta-llama/Llama-3.1-8B",
                                    "--fsdp", "full_shard auto_wrap", "--gradient_checkpointing", *script])
    return to_config(ns).identity


def test_a_fine_tune_starts_near_2_3_and_falls_towards_0_8():
    """A base model on an instruction set, three epochs of it: the printed
    loss starts at the base model's (~2.3), steps down at each new epoch
    and ends near 0.8; the held-out loss flattens near 1.0-1.3 and creeps
    up in the last epoch (overfitting); the summary says fine-tuned."""
    # The Trainer evaluates only when asked (eval_strategy "no" by default): each epoch here.
    i = fine_tune("--dataset_name", "tatsu-lab/alpaca", "--num_train_epochs", "3", "--eval_strategy", "epoch")
    h = i.hyper
    assert (i.dataset.name, h.epochs, h.total_steps) == ("alpaca", 3, 3 * h.steps_per_epoch)
    events = run(i, VirtualClock(0.0, UTC))
    loss = {e.step: e.loss for e in events if isinstance(e, ev.Step)}
    vals = [e.val_loss for e in events if isinstance(e, ev.Validation)]
    assert 2.1 < loss[1] < 2.5 and 0.7 < loss[h.total_steps] < 0.95
    for end in (h.steps_per_epoch, 2 * h.steps_per_epoch):  # a new epoch: the examples come round again
        assert loss[end + 1] < loss[end] - 0.1
    assert len(vals) == 3 and all(1.0 < v < 1.35 for v in vals) and vals[2] > vals[1]
    (summary,) = [e for e in events if isinstance(e, ev.Summary)]
    out = PytorchLines(100, UTC)
    out.routed(ev.RunIdentity(i))
    assert "  Model: Llama-3.1-8B (fine-tuned)" in [line.text for line in out.lines(summary)]


def test_a_bigger_base_model_starts_lower():
    small, big = (fine_tune("--dataset_name", "alpaca", "--max_steps", "20", "--model_name_or_path", name)
                  for name in ("meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-14B"))
    assert sim.trend_loss(big, 1) < sim.trend_loss(small, 1)


def test_pre_training_keeps_chinchilla_and_says_no_fine_tune():
    i = identity.build(1, 1, 8, 200, asked=identity.Asked(dataset="FineWeb-Edu"))
    assert not i.hyper.fine_tune and not sim.instruct(i)
    assert sim.trend_loss(i, 1) == pytest.approx(math.log(i.model.vocab), rel=0.02)
    assert catalog.find(catalog.datasets(), "FineWeb-Edu", "dataset") == i.dataset


def test_a_mixture_of_experts_counts_active_parameters_for_flops_and_all_for_bytes():
    """Mixtral routes each token through 2 of its 8 experts: its FLOPs (MFU,
    TFLOP/s, tokens/s) count the 12.9B parameters a token meets; its
    gradients, checkpoints and export every one of the 46.7B."""
    i = identity.build(1, 2, 8, 20, model="Mixtral-8x7B-v0.1", gpu="NVIDIA H100 80GB HBM3")
    step = sim.compute_seconds(i, 5)
    tp = sim.throughput(i, step)
    assert tp.mfu == pytest.approx(sim.mfu(i, 5))  # the MFU the step's time came from
    active = 6 * i.model.active_params * i.hyper.tokens_per_step / (i.world * step)
    assert tp.tflops_per_gpu * 1e12 == pytest.approx(active) and i.model.active_params < i.model.params / 3
    assert sim.checkpoint_bytes(i) == {"model": 2.0 * i.model.params, "optimizer": 12.0 * i.model.params}
    assert sim.grad_numel(i) == i.model.params // (i.parallel.tp * i.parallel.pp)


def test_the_dataset_lines_say_how_much_of_the_data_the_run_sees():
    def said(i: identity.Identity) -> str:
        out = PytorchLines(100, UTC)
        out.routed(ev.RunIdentity(i))
        (line,) = [x.text for x in out.lines(ev.Phase("init", "dataset", 0, 0.0)) if "Training samples" in x.text]
        return line

    tuned = fine_tune("--dataset_name", "tatsu-lab/alpaca", "--num_train_epochs", "3", "--eval_strategy", "epoch")
    h = tuned.hyper
    assert said(tuned).endswith(f"Training samples: {h.steps_per_epoch * h.global_batch:,} (3 epochs this run)")
    short = fine_tune("--dataset_name", "HuggingFaceH4/ultrachat_200k", "--max_steps", "997")
    share = 100 * 997 / short.hyper.steps_per_epoch
    assert 10 < share < 100 and said(short).endswith(f"({share:.3g}% of an epoch this run)")
    assert "e+" not in said(short)
    corpus = identity.build(1, 1, 8, 100, asked=identity.Asked(dataset="FineWeb"))
    assert said(corpus).endswith("(<0.01% of an epoch this run)")


def test_the_validation_header_says_why_it_evaluates():
    """An epoch's end is said only at an epoch's end; a pre-training run's
    interval evaluation names its step; a stop between them says so."""
    def header(i: identity.Identity, step: int) -> str:
        out = PytorchLines(100, UTC)
        out.routed(ev.RunIdentity(i))
        (line, *_) = [x.text for x in out.lines(ev.Phase("validation", "", step, 0.0))]
        return line

    corpus = identity.build(0, 1, 8, 300, asked=identity.Asked(dataset="FineWeb"))  # evaluates every 100
    every = corpus.hyper.eval_every
    assert every < 300 and header(corpus, every).endswith(
        f"[Validation] Step {every}/300, evaluating on validation set...")
    assert header(corpus, 300).endswith("[Validation] Step 300/300, evaluating on validation set...")
    assert "Training stopped at step 7," in header(corpus, 7)
    tuned = fine_tune("--dataset_name", "tatsu-lab/alpaca", "--num_train_epochs", "3", "--eval_strategy", "epoch")
    spe = tuned.hyper.steps_per_epoch
    assert header(tuned, spe).endswith("[Validation] Epoch 1 complete, evaluating on validation set...")
    assert header(tuned, 3 * spe).endswith("[Validation] Epoch 3 complete, evaluating on validation set...")
