"""Invariants of the training model, over many seeds and topologies."""

from __future__ import annotations

import math
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock
from fakerun.world.memory import Job, Strategy, plan_memory

SEEDS = range(60)
TOPOLOGIES = [(1, 8), (2, 8), (1, 2), (4, 4)]


def idents():
    for seed in SEEDS:
        nnodes, nproc = TOPOLOGIES[seed % len(TOPOLOGIES)]
        yield identity.build(seed, nnodes, nproc)


@pytest.fixture(scope="module")
def all_idents():
    return list(idents())


def test_loss_decreases_in_trend_and_never_sticks(all_idents):
    for i in all_idents:
        total = i.hyper.total_steps
        trend = [sim.trend_loss(i, s) for s in range(1, total + 1)]
        assert all(a > b for a, b in zip(trend, trend[1:], strict=False)), i.model.name
        assert trend[0] <= math.log(i.model.vocab) + 1e-9
        if not sim.instruct(i):  # a fine-tune's story: test_draw_configs
            floor = i.data_loss + sim.CHINCHILLA_A / i.model.params ** sim.CHINCHILLA_ALPHA
            assert trend[-1] > floor + 0.05  # still above the floor: not stuck at it
        window = [sum(sim.local_loss(i, r, s) for r in range(i.world)) / i.world for s in (1, 2, 3)]
        late = [sum(sim.local_loss(i, r, s) for r in range(i.world)) / i.world
                for s in (total - 2, total - 1, total)]
        assert min(window) > max(late)


def test_per_rank_losses_differ_but_stay_close(all_idents):
    for i in all_idents[:10]:
        losses = [sim.local_loss(i, r, 50) for r in range(i.world)]
        assert len(set(losses)) == len(losses) and all(x > 0 for x in losses)
        assert max(losses) / min(losses) < 1.4


def test_lr_warms_up_then_decays_to_a_tenth_or_to_zero(all_idents):
    for i in all_idents:
        h = i.hyper
        lrs = [sim.learning_rate(i, s) for s in range(1, h.total_steps + 1)]
        warm = lrs[:h.warmup_steps]
        assert all(a < b for a, b in zip(warm, warm[1:], strict=False))
        assert lrs[h.warmup_steps - 1] == pytest.approx(h.max_lr)
        decay = lrs[h.warmup_steps - 1:]
        assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
        # Pre-training decays to 10% of the peak, a fine-tune (the Trainer's cosine) to 0.
        assert lrs[-1] == pytest.approx(h.min_lr, abs=1e-15)
        assert h.min_lr == (0.0 if h.fine_tune else pytest.approx(0.1 * h.max_lr))


def test_grad_norm_is_spikier_early(all_idents):
    for i in all_idents[:20]:
        early = [sim.local_grad_norm(i, 0, s) for s in range(1, 21)]
        late = [sim.local_grad_norm(i, 0, s) for s in range(i.hyper.total_steps - 19, i.hyper.total_steps + 1)]
        assert sum(early) / 20 > sum(late) / 20
        assert all(0 < g < 50 for g in early + late)


def test_memory_fits_and_differs_by_rank_and_stage(all_idents):
    for i in all_idents:
        capacity = i.gpu.memory_mib * 2**20
        reserved = [sim.memory_bytes(i, r)[1] for r in range(i.world)]
        allocated = [sim.memory_bytes(i, r)[0] for r in range(i.world)]
        assert all(a <= r <= capacity for a, r in zip(allocated, reserved, strict=True))
        assert len(set(reserved)) > 1
        if i.parallel.pp > 1:
            first, last = sim.stage_of(i, 0), sim.stage_of(i, i.world - 1)
            assert first != last


def test_telemetry_power_never_above_cap_and_dips_outside_training(all_idents):
    for i in all_idents:
        for r in range(i.world):
            train = sim.telemetry(i, r, 10, "train")
            ckpt = sim.telemetry(i, r, 10, "checkpoint")
            assert 0 < train.power_w <= i.gpu.power_cap_w and ckpt.power_w <= i.gpu.power_cap_w
            assert ckpt.util < train.util and ckpt.power_w < train.power_w
            assert train.mem_used_mib <= i.gpu.memory_mib and 30 <= train.temp_c <= 90


def test_throughput_is_consistent(all_idents):
    for i in all_idents:
        step_time = sim.compute_seconds(i, 5)
        tp = sim.throughput(i, step_time)
        assert tp.tokens_per_s * tp.step_time_s == pytest.approx(i.hyper.tokens_per_step)
        assert 0.30 <= tp.mfu <= 0.60
        assert tp.tflops_per_gpu == pytest.approx(tp.mfu * i.gpu.bf16_tflops)


def test_versions_belong_together():
    pairs = {(v.torch, v.nccl, v.cuda) for v in catalog.versions()}
    assert ("2.5.1", "2.21.5", "12.4") in pairs and ("2.4.1", "2.20.5", "12.1") in pairs


def test_catalog_errors_name_file_and_line():
    with pytest.raises(catalog.CatalogError, match=r"^x\.txt:3: expected 4 "):
        catalog.parse("# c\na | 1 | pretrain | real\nbroken | 2 | pretrain\n", catalog.Dataset, "x.txt")
    with pytest.raises(catalog.CatalogError, match=r"^x\.txt:1: 'many' is not a whole number"):
        catalog.parse("a | many | pretrain | real\n", catalog.Dataset, "x.txt")


def test_named_model_and_gpu_and_what_cannot_fit():
    i = identity.build(1, 1, 8, model="llama-3.1-8b", gpu="NVIDIA H100 80GB HBM3")
    assert (i.model.name, i.gpu.name) == ("Llama-3.1-8B", "NVIDIA H100 80GB HBM3")
    with pytest.raises(catalog.CatalogError, match="does not fit"):
        identity.build(1, 1, 2, model="Llama-3.1-405B", gpu="NVIDIA L40S")
    with pytest.raises(catalog.CatalogError, match="unknown model 'GPT-7'; known: "):
        identity.build(1, 1, 8, model="GPT-7")


def test_every_seed_builds_a_job_on_one_gpu():
    """Nothing asked, one GPU: the draw must land on a GPU that holds a model
    (no model of ours fits a lone 24 GiB 4090; seed 23 drew one at the rare
    rate of jokes, and --funny always does)."""
    for seed in range(120):
        for jokes in (identity.JOKES_NEVER, identity.JOKES_RARE, identity.JOKES_ALWAYS):
            i = identity.build(seed, 1, 1, 10, jokes=jokes)
            assert plan_memory(Job(i.model, i.gpu, 1, 1)) is not None
    assert identity.build(23, 1, 1, 10, jokes=identity.JOKES_RARE).gpu.name != "NVIDIA GeForce RTX 4090"


def run_timeline(i: identity.Identity) -> list:
    """Drive a Timeline as the coordinator would, with every rank's values."""
    clock = VirtualClock(1_700_000_000.0, UTC)
    t = Timeline(i, clock)
    out = []

    def done(tag, op, step, values_of, sim_s=0.0, numel=0):
        contributions = {r: values_of(r) for r in range(i.world)}
        result = [sum(c[k] for c in contributions.values()) / i.world for k in range(len(contributions[0]))] \
            if contributions[0] else []
        events, _, _ = t.on_collective(Completed(tag, op, step, numel, {r: sim_s for r in range(i.world)},
                                                 contributions, result, 0))
        out.extend(events)

    done("phase:train", "barrier", 0, lambda r: [])
    for step in range(1, i.hyper.total_steps + 1):
        done("train_step", "all_reduce", step,
             lambda r, s=step: [sim.local_loss(i, r, s), sim.local_grad_norm(i, r, s)],
             sim.compute_seconds(i, step), sim.grad_numel(i))
        if i.hyper.evaluates_after(step):
            done("validation", "all_reduce", step, lambda r, s=step: [sim.local_val_loss(i, r, s)],
                 sim.eval_seconds(i))
    done("phase:summary", "barrier", 0, lambda r: [])
    return out


def test_timeline_figures_agree_with_each_other_and_the_summary(all_idents):
    for i in all_idents[:12]:
        events = run_timeline(i)
        steps = [e for e in events if isinstance(e, ev.Step)]
        assert len(steps) == i.hyper.total_steps
        times = [s.time for s in steps]
        evaluated = {e.step for e in events if isinstance(e, ev.Validation)}
        for prev, cur in zip(steps, steps[1:], strict=False):
            if prev.step not in evaluated:  # timestamps advance by exactly the step time
                assert cur.time - prev.time == pytest.approx(cur.step_time_s)
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
        for s in steps:
            assert s.ppl == math.exp(s.loss)
            assert s.tokens_per_s * s.step_time_s == pytest.approx(i.hyper.tokens_per_step)
            assert s.loss_min <= s.loss <= s.loss_max
        # After the last step only its evaluation and checkpoint are left.
        assert steps[-1].eta_s == steps[-1].pauses_s > 0
        (summary,) = [e for e in events if isinstance(e, ev.Summary)]
        vals = [e.val_loss for e in events if isinstance(e, ev.Validation)]
        assert summary.model == i.model.name and summary.steps == steps[-1].step
        assert summary.final_loss == steps[-1].loss and summary.best_val_loss == min(vals)
        assert summary.tokens == i.hyper.total_steps * i.hyper.tokens_per_step
        assert summary.train_time_s >= steps[-1].elapsed_s
        for v in vals:
            if sim.instruct(i):  # a fine-tune memorises its examples: training falls below held-out
                assert v > steps[-1].loss
            else:  # validation tracks the training loss closely
                assert 0.9 < v / steps[-1].loss < 1.2 or v == vals[0]


def test_tiny_runs_never_announce_more_epochs_than_steps():
    for seed in range(30):
        for steps in (1, 2, 3):
            h = identity.build(seed, 1, 2, steps).hyper
            assert h.epochs <= steps and (h.epochs - 1) * h.steps_per_epoch < steps


def test_pipeline_stages_differ_more_than_ranks_within_a_stage():
    # The tuned plan of 70B on 16 H100s no longer needs a pipeline: the script's arguments ask for one,
    # without recomputation (the first stage keeps two micro batches' activations, the last one's).
    pipelined = identity.Asked(strategy=Strategy(tp=8, pp=2, recompute="none"))
    i = identity.build(1, 2, 8, model="Llama-3.1-70B", gpu="NVIDIA H100 80GB HBM3", asked=pipelined)
    assert i.parallel.pp == 2
    by_stage: dict[int, list[float]] = {}
    for r in range(i.world):
        by_stage.setdefault(sim.stage_of(i, r), []).append(sim.memory_bytes(i, r)[1])
    first, last = by_stage[0], by_stage[1]
    within = max(max(first) - min(first), max(last) - min(last))
    between = abs(sum(first) / len(first) - sum(last) / len(last))
    assert between > within and all(m <= i.gpu.memory_mib * 2**20 for m in first + last)
