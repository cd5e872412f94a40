"""What the training run *is*, as the coordinator sees it complete.

The coordinator hands every completed collective here. The timeline advances
the virtual clock by the slowest rank's simulated work plus the collective's
simulated NCCL time, and turns tagged collectives into the run's domain
events (phases, steps, validation, checkpoints, export, summary, periodic GPU
and NCCL reports). Pure: no sockets; the wall clock is only consulted for
--exit-after-time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from fakerun import events as ev
from fakerun.protocol import tags
from fakerun.protocol.messages import Telemetry
from fakerun.world import linkflap, pace, tensors
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock
from fakerun.world.hardware import FaultLike
from fakerun.world.identity import Identity
from fakerun.world.memory import SHARDED_STATE_DICT

BF16 = 2
# The values a tag's all_reduce carries.
_RESULT_WIDTH = {tags.TRAIN_STEP: 2, tags.VALIDATION: 1, tags.REQUEUED: 1}


class Completed(NamedTuple):
    """A collective every rank has entered (a tuple: one per collective)."""

    tag: str
    op: str
    step: int
    numel: int
    sim_s: dict[int, float]
    contributions: dict[int, list[float]]
    result: list[float]
    wall_us: int


@dataclass
class _Run:
    train_start: float = 0.0
    step: int = 0
    loss: float = math.nan
    best_val: float = math.inf
    recent: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # the last few steps'
    window: list[tuple[str, int, float]] = field(default_factory=list)
    stopping: bool = False  # training ends after the step being handled, before its last


class Timeline:
    def __init__(self, ident: Identity, clock: VirtualClock, deadline: float | None = None,
                 monotonic: Callable[[], float] | None = None, output_dir: str | None = None,
                 resumed_step: int = 0, saved: tuple[int, ...] = (), style: str = "torchrun",
                 training_args: bool = False, fault: FaultLike | None = None) -> None:
        """`saved`: the steps of the checkpoints already in `output_dir` (a
        run resumed, or rerun, into it), which the Trainer's rotation counts.
        `style`: whose script runs (what its export writes); `training_args`:
        whether its Trainer's save_model writes training_args.bin (the
        launcher asks checkpoint/training_args.written). `fault`: the run's
        (config.options.Fault), whose hardware condition times the collectives."""
        self.ident = ident
        self.fault = fault
        self.style = style
        self.training_args = training_args
        self.save_dir = output_dir
        self.saved = sorted(set(saved))
        self.clock = clock
        self.deadline = deadline
        self.monotonic = monotonic
        self.telemetry: dict[int, Telemetry] = {}
        self.run = _Run(step=resumed_step)
        log = ident.hyper.log_every
        # One GPU has no peers: NCCL moves nothing, so there is no collective to report.
        self.gpu_every, self.nccl_every = log * 10, log * 5 if ident.world > 1 else 0
        self.pauses = end_of_epoch_seconds(ident)
        self._handlers = self._handler_table()  # consulted for every collective

    def on_telemetry(self, msg: Telemetry) -> None:
        self.telemetry[msg.rank] = msg

    def on_collective(self, done: Completed, stop_requested: bool = False) -> tuple[list, bool, int]:
        """Events, the stop flag for the release, and the simulated NCCL
        duration in microseconds. `stop_requested`: the launcher was asked
        to stop (the job's signal), which ends training like --exit-after-time."""
        comm_s = self._comm_seconds(done)
        work = max(done.sim_s.values(), default=0.0)
        flapped = self._link_flap(done, self.clock.now + work)  # as the slowest rank enters it
        self.clock.advance(work + comm_s)
        if self.nccl_every:
            self.run.window.append((done.op, done.numel, comm_s))
        if done.tag.startswith(tags.PHASE):
            events = [ev.Phase(done.tag.removeprefix(tags.PHASE), "", self.run.step, self.clock.now)]
            if done.tag == tags.PHASE_TRAIN:
                self.run.train_start = self.clock.now
            if done.tag == tags.PHASE_SUMMARY:
                events.append(self._summary())
            return events, False, round(comm_s * 1e6)
        # Decided before the step's event, which says so: the script logs the
        # step it stops at, whatever its logging interval.
        self.run.stopping = self._stop(done, stop_requested)
        handler = self._handlers.get(done.tag)
        events = handler(done) if handler and self._shaped(done) else []
        return flapped + events, self.run.stopping, round(comm_s * 1e6)

    @staticmethod
    def _shaped(done: Completed) -> bool:
        """Results carry what their tag promises (a buggy rank's mislabelled
        collective is recorded, never interpreted)."""
        width = _RESULT_WIDTH.get(done.tag, 0)
        if width:
            return done.op == "all_reduce" and len(done.result) == width
        return done.op == "barrier"

    def _handler_table(self) -> dict[str, Callable[[Completed], list]]:
        return {
            tags.INIT_PROCESS_GROUP: lambda d: [ev.Phase("init", "nccl", 0, self.clock.now)],
            tags.LOAD_MODEL: lambda d: [ev.Phase("init", "model", 0, self.clock.now)],
            tags.LOAD_TOKENIZER: lambda d: [ev.Phase("init", "tokenizer", 0, self.clock.now)],
            tags.LOAD_DATASET: lambda d: [ev.Phase("init", "dataset", 0, self.clock.now)],
            tags.TRAIN_STEP: self._step,
            tags.VALIDATION: self._validation,
            tags.CHECKPOINT: self._checkpoint,
            tags.HPC_CHECKPOINT: lambda d: [ev.HpcCheckpoint(self.run.step, self.epoch(max(1, self.run.step)),
                                                             max(d.sim_s.values()), self.clock.now)],
            tags.REQUEUED: lambda d: [ev.Requeued(self.run.step, round(d.result[0]), self.clock.now)],
            tags.EXPORT: self._export,
        }

    def _comm_seconds(self, done: Completed) -> float:
        return pace.collective_seconds(self.ident, self.fault, done.op, done.numel, done.step)

    def _link_flap(self, done: Completed, now: float) -> list:
        """The port's flap, as the step's gradient all-reduce starts (`now`):
        its node's kernel lines, and the HCA's async events NCCL hears."""
        fault = self.fault
        if fault is None or fault.kind != "link-flap" or done.tag != tags.TRAIN_STEP \
                or done.step != fault.step:
            return []
        f = linkflap.flap(self.ident, fault.rank, fault.step, fault.param("unplugged_s"))
        said = [ev.KernelMessage(f.node, text, now + after) for after, text in linkflap.kernel_lines(f)]
        said += [ev.PortEvent(f.node, f.gpu, False, now), ev.PortEvent(f.node, f.gpu, True, now + f.down_s)]
        return sorted(said, key=lambda e: e.time)

    def _stop(self, done: Completed, stop_requested: bool) -> bool:
        if done.tag != tags.TRAIN_STEP:
            return False
        if stop_requested:
            return True
        return self.deadline is not None and self.monotonic is not None and self.monotonic() >= self.deadline

    # -- training ---------------------------------------------------------
    def _step(self, done: Completed) -> list:
        ident, run = self.ident, self.run
        step_time = max(done.sim_s.values()) + self._comm_seconds(done)
        run.recent = (run.recent + [step_time])[-20:]
        run.step, run.loss = done.step, done.result[0]
        tp = sim.throughput(ident, step_time)
        losses = [done.contributions[r][0] for r in sorted(done.contributions)]
        remaining = max(0, ident.hyper.total_steps - done.step)
        pauses = sum(seconds for at, seconds in self.pauses.items() if at >= done.step)
        overflow = sim.overflows(run.grad_norms, done.result[1])
        run.grad_norms = (run.grad_norms + [done.result[1]])[-sim.OVERFLOW_HISTORY:]
        events: list = [ev.Step(
            done.step, ident.hyper.total_steps, done.result[0], min(losses), max(losses), done.result[1],
            epoch=self.epoch(done.step), ppl=sim.safe_exp(done.result[0]),
            lr=sim.learning_rate(ident, done.step),
            tokens_per_s=tp.tokens_per_s, samples_per_s=tp.samples_per_s, step_time_s=step_time,
            mfu=tp.mfu, tflops_per_gpu=tp.tflops_per_gpu, elapsed_s=self.clock.now - run.train_start,
            eta_s=remaining * sum(run.recent) / len(run.recent) + pauses, pauses_s=pauses,
            time=self.clock.now,
            overflow=overflow, stopped=run.stopping, **self._gpu_summary())]
        if self.nccl_every and done.step % self.nccl_every == 0:
            events.append(self._nccl_stats(done.step))
        if done.step % self.gpu_every == 0 and self.telemetry:
            events.append(self.gpu_status(done.step))
        return events

    def _gpu_summary(self) -> dict[str, float]:
        t = list(self.telemetry.values())
        if not t:
            return {}
        return {"gpu_mem_mib": max(x.mem_used_mib for x in t), "gpu_mem_total_mib": self.ident.gpu.memory_mib,
                "gpu_util": sum(x.util for x in t) / len(t), "gpu_temp_c": sum(x.temp_c for x in t) / len(t),
                "gpu_mem_used_mib": [self.telemetry[r].mem_used_mib for r in sorted(self.telemetry)]}

    def epoch(self, step: int) -> int:
        return min(self.ident.hyper.epochs, (step - 1) // self.ident.hyper.steps_per_epoch + 1)

    def gpu_status(self, step: int) -> ev.GpuStatus:
        ident, topo = self.ident, self.ident.topology
        gpus = [ev.GpuSample(r, topo.node_of(r), topo.local_rank_of(r), t.util, t.temp_c, t.power_w,
                             t.mem_used_mib, ident.gpu.memory_mib)
                for r, t in sorted(self.telemetry.items())]
        return ev.GpuStatus(step, gpus, self.clock.now)

    def _nccl_stats(self, step: int) -> ev.NcclStats:
        by_op: dict[str, list[tuple[int, float]]] = {}
        for op, numel, seconds in self.run.window:
            by_op.setdefault(op, []).append((numel, seconds))
        self.run.window = []
        n = self.ident.world
        ops = []
        for op, rows in sorted(by_op.items()):
            total_bytes = sum(numel for numel, _ in rows) * BF16
            total_s = sum(s for _, s in rows)
            factor = 2 * (n - 1) / n if op == "all_reduce" else 1.0
            busbw = total_bytes * factor / total_s / 1e9 if total_s else 0.0
            ops.append(ev.OpStats(op, len(rows), total_bytes, 1e3 * total_s / len(rows), busbw))
        return ev.NcclStats(step, ops, self.clock.now)

    # -- phases ---------------------------------------------------------------
    def _validation(self, done: Completed) -> list:
        val = done.result[0]
        self.run.best_val = min(self.run.best_val, val)
        return [ev.Validation(self.run.step, self.epoch(max(1, self.run.step)), val, sim.safe_exp(val),
                              max(done.sim_s.values()), sim.eval_samples(self.ident), self.clock.now)]

    def _checkpoint(self, done: Completed) -> list:
        sizes = sim.checkpoint_bytes(self.ident)
        step = self.run.step
        path = (f"{self.save_dir.rstrip('/')}/checkpoint-{step}/" if self.save_dir
                else f"checkpoints/{self.ident.slug}/epoch_{self.epoch(max(1, step))}_step_{step}/")
        return [ev.Checkpoint(step, self.epoch(max(1, step)), path, self.weight_files(),
                              round(sizes["model"]), round(sizes["optimizer"]),
                              max(done.sim_s.values()), self.clock.now, self._rotated(step))]

    def _rotated(self, step: int) -> tuple[int, ...]:
        """Trainer._rotate_checkpoints (trainer.py at v4.42.4 to v5.0.0): past
        save_total_limit, the oldest checkpoints by step go (no best model to
        keep: no metric_for_best_model)."""
        self.saved = sorted({*self.saved, step})
        limit = self.ident.hyper.save_limit
        if limit is None or limit <= 0 or len(self.saved) <= limit:
            return ()
        gone, self.saved = self.saved[:len(self.saved) - limit], self.saved[len(self.saved) - limit:]
        return tuple(gone)

    def _export(self, done: Completed) -> list:
        files = tensors.export_files(self.ident.model, self.ident.versions.transformers, self.style,
                                     self.training_args)
        if self.style == "hf" and self.ident.parallel.state_dict == SHARDED_STATE_DICT:
            files = []  # the Trainer's save_model saves no sharded FSDP model (checkpoint/fsdp.py)
        size = BF16 * self.ident.model.params if files else 0
        # Into --output-dir where one is given: where the style's writer puts the files its lines name.
        path = f"{self.save_dir.rstrip('/')}/" if self.save_dir else self.output_dir()
        return [ev.Export(path, files, round(size), max(done.sim_s.values()), self.clock.now)]

    def weight_files(self) -> int:
        """The safetensors files save_pretrained splits the weights into:
        what the checkpoint writer writes (world/tensors.py decides for both)."""
        return tensors.shard_count(self.ident.model, self.ident.versions.transformers)

    def output_dir(self) -> str:
        """Named for what the run made: a fine-tune of a base model, or a model pre-trained from scratch."""
        kind = "finetuned" if self.ident.hyper.fine_tune else "pretrained"
        return f"./models/{self.ident.slug}-{kind}/"

    def _summary(self) -> ev.Summary:
        run, ident = self.run, self.ident
        train_time = self.clock.now - run.train_start
        tokens = run.step * ident.hyper.tokens_per_step
        return ev.Summary(ident.model.name, self.epoch(max(1, run.step)), run.step, run.loss,
                          sim.safe_exp(run.loss), run.best_val, train_time, tokens,
                          tokens / train_time if train_time else 0.0, self.output_dir(), self.clock.now,
                          ident.hyper.fine_tune)


def end_of_epoch_seconds(ident: Identity) -> dict[int, float]:
    """The simulated time the script spends between steps, by the step it
    follows: each validation (a fine-tune's at each epoch's end, a
    pre-training run's every eval_every steps) and each checkpoint save, at
    the pace of the slowest rank, as the script does."""
    ranks, h = range(ident.world), ident.hyper
    pauses = {step: max(sim.eval_seconds(ident, r, step) for r in ranks) for step in h.eval_steps()}
    if h.evaluates_again():  # Megatron's evaluation after training, beside train()'s at the same step
        pauses[h.total_steps] += max(sim.eval_seconds(ident, r, h.total_steps, again=True) for r in ranks)
    for step in h.save_steps():
        pauses[step] = pauses.get(step, 0.0) + max(sim.checkpoint_seconds(ident, r, step) for r in ranks)
    return pauses
