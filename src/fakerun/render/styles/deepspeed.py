"""`--style deepspeed`: a training script built on `deepspeed.initialize`
(fp16 with the dynamic loss scaler, the run's ZeRO stage, a client AdamW and
LambdaLR), launched by torchrun, as the pinned DeepSpeed version logs it
(reference/log-formats.md §5; the file:line of every call, per version, is in
data/style-deepspeed.toml, read from each version's sdist).

DeepSpeed's logger writes to stdout: `log_dist`, ZeRO and the throughput timer
from rank 0 only, the accelerator and `cdb=` lines from every rank, a
checkpoint shard from the rank that writes it. The script logs the way
DeepSpeedExamples' HelloDeepSpeed does: loguru on stderr, rank 0, the loss
with 4 decimals every `steps_per_print` steps.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.lines import STDERR, STDOUT, Line
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world.identity import Identity
from fakerun.world.loss_scale import (
    HYSTERESIS,
    MIN_SCALE,
    SCALE_POWER,
    SCALE_WINDOW,
    LossScaler,
    ScaleReduced,
    Skip,
)
from fakerun.world.memory import state_bytes

GIB = 2**30
CLIP = 1.0
BETAS = (0.9, 0.95)
PARAM_GROUPS = 2  # with and without weight decay, as LLM scripts group them
MOMENTA = [BETAS] * PARAM_GROUPS  # engine.get_mom(): each group's betas
BUCKET = 500_000_000  # reduce/allgather bucket sizes, written 5e8 in the config
PREFETCH = 50_000_000  # ZeRO-3's default stage3_prefetch_bucket_size
SUB_GROUP = 1_000_000_000  # ZeRO-3's default sub_group_size
TIMER_START = 2  # ThroughputTimer's start_step: the first two steps are not timed
INIT_SPAN_S = 4.0  # deepspeed.initialize's wall time (at most half the first step)
ACCELERATOR = "Setting ds_accelerator to cuda (auto detect)"  # real_accelerator.py, at import


def ds_stamp(when: float, tz: tzinfo | None) -> str:
    """logging's default asctime: a comma, whole milliseconds."""
    t = datetime.fromtimestamp(when, tz)
    return f"[{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d}]"


def loguru_stamp(when: float, tz: tzinfo | None) -> str:
    t = datetime.fromtimestamp(when, tz)
    return f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}"


def ds_json(o: Any, level: int = 0) -> str:
    """DeepSpeed's ScientificNotationEncoder.iterencode (config_utils.py):
    numbers over 1e3 in %e, items joined by ", " (so lines end in a space)."""
    if isinstance(o, bool):
        return "true" if o else "false"
    if isinstance(o, (int, float)):
        return f"{o:e}" if o > 1e3 else f"{o}"
    if isinstance(o, dict):
        inner, outer = " " * 4 * (level + 1), " " * 4 * level
        items = [f'\n{inner}"{k}": {ds_json(v, level + 1)}' for k, v in o.items()]
        return "{" + ", ".join(items) + f"\n{outer}" + "}"
    if isinstance(o, (list, tuple)):
        return f"[{', '.join(ds_json(v) for v in o)}]"
    return json.dumps(o)


def gib(n: float) -> float:
    """see_memory_usage's and the timer's figures: round(bytes / 2**30, 2), printed raw."""
    return round(n / GIB, 2)


def memory_figures(allocated: float, peak: float, reserved: float) -> str:
    """see_memory_usage's second line: an f-string continued with backslashes,
    so each gap is "GB " plus the 8 spaces of indentation, and a space ends it."""
    return (f"MA {gib(allocated)} GB         Max_MA {gib(peak)} GB         "
            f"CA {gib(reserved)} GB         Max_CA {round(reserved / GIB)} GB ")


def timer_text(step: int, micro_step: int, running: float, current: float, allocated: float,
               peak: float) -> str:
    """ThroughputTimer.stop's line (raw float reprs)."""
    return (f"epoch=0/micro_step={micro_step}/global_step={step}, RunningAvgSamplesPerSec={running}, "
            f"CurrSamplesPerSec={current}, MemAllocated={gib(allocated)}GB, MaxMemAllocated={gib(peak)}GB")


def config_line(name: str, value: str) -> str:
    """DeepSpeedConfig.print: names of 29 characters or more get no dots."""
    return "  {} {} {}".format(name, "." * (29 - len(name)), value)


def skip_record(skip: Skip) -> tuple[str, str]:
    """(which of update_scale's two logging calls, its message) for a skipped step."""
    head = f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: {int(skip.attempted)}"
    if isinstance(skip, ScaleReduced):
        return "overflow", f"{head}, reducing to {int(skip.reduced_to)}"
    return "hysteresis", f"{head}, but hysteresis is {skip.hysteresis}. Reducing hysteresis to {skip.left}"


def _data() -> dict[str, Any]:
    return texts.load("style-deepspeed")


def _closest(version: str, known: dict[str, Any]) -> str:
    """The version itself, else the closest older one the data knows."""
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())
    older = [k for k in known if parts(k) <= parts(version)]
    return max(older, key=parts) if older else min(known, key=parts)


def version_table(version: str) -> dict[str, Any]:
    """Where this version logs from, and its other differences."""
    known = _data()["versions"]
    return known[_closest(version, known)]


def config_dump(version: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """(attribute, printed value) as DeepSpeedConfig.print sorts them."""
    dumps = _data()["dump"]
    table = _merged(dumps, _closest(version, dumps))
    rows = {k: string.Template(v).substitute(values) for k, v in table.items() if isinstance(v, str)}
    rows.update({k: ds_json(json.loads(v)) for k, v in table["json"].items()})
    return sorted(rows.items())


def _merged(dumps: dict[str, Any], key: str) -> dict[str, Any]:
    own = dumps[key]
    merged = _merged(dumps, own["base"]) if "base" in own else {"json": {}}
    merged.update({k: v for k, v in own.items() if k not in ("base", "drop", "json")})
    merged["json"] = {**merged["json"], **own.get("json", {})}
    for name in own.get("drop", []):
        merged.pop(name, None)
    return merged


class DeepSpeedLines(EventRoutes):
    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.tz = tz
        self.v: dict[str, Any] = {}
        self._reset()
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Export: self._export,
        }

    def _reset(self) -> None:
        """A new run (or a restart): a new process, a new engine."""
        self.scaler = LossScaler()
        self.skipped = 0
        self.timed: list[float] = []  # the step times the throughput timer measured
        self.timer_steps = 0  # the timer's own global_step_count
        self.global_step = 0
        self.phase_time = 0.0

    def lines(self, event: Any) -> list[Line]:
        if isinstance(event, ev.RunIdentity):
            self.routed(event)
            self.v = version_table(event.identity.versions.deepspeed)
            self._reset()
            return []
        return self.routed(event) or []

    # -- the two loggers ------------------------------------------------------
    def log(self, when: float, where: str, message: str, rank: int = 0) -> list[Line]:
        """DeepSpeed's logger, `[time] [INFO] [file:line:func] message`; one
        record of several lines is prefixed on its first only."""
        text = f"{ds_stamp(when, self.tz)} [INFO] [{self.v[where]}] {message}"
        return [Line(part, STDOUT, rank) for part in text.split("\n")]

    def dist(self, when: float, message: str, rank: int = 0) -> list[Line]:
        """log_dist(message, ranks=[...]): the record's site is logging.py's."""
        return self.log(when, "log_dist", f"[Rank {rank}] {message}", rank)

    def script(self, when: float, message: str) -> list[Line]:
        """The script's own log_dist(..., ranks=[0]) over loguru (stderr)."""
        where = _data()["loguru"]["where"]
        return [Line(f"{loguru_stamp(when, self.tz)} | INFO     | {where} - [Rank 0] {message}", STDERR, 0)]

    def banner(self, when: float) -> list[Line]:
        """`import deepspeed` on every rank, then deepspeed.init_distributed():
        every rank says cdb=None, rank 0 which backend it initialises."""
        ranks = range(self.ident.world)
        imported = [when + 0.6 + 0.04 * abs(sim.gauss(self.ident.seed, "ds-import", r)) for r in ranks]
        out: list[Line] = []
        if self.v["level"] == "INFO":  # from 0.17.6 logged before the script raises the level
            for rank in ranks:
                out += self.log(imported[rank], "accelerator", ACCELERATOR, rank)
        for rank in ranks:
            out += self.log(imported[rank] + 0.35, "cdb", "cdb=None", rank)
            if rank == 0:
                out += self.log(imported[0] + 0.35, "backend",
                                "Initializing TorchBackend in DeepSpeed with backend nccl")
        return out

    # -- phases ---------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        began, self.phase_time = self.phase_time or e.time, e.time
        if e.name == "init" and e.stage == "model":
            return self.script(began, "Creating Model") + self.script(e.time, "Model Creation Done")
        if e.name == "init" and e.stage == "dataset":
            return self.script(began, "Creating Datasets") + self.script(e.time, "Dataset Creation Done")
        if e.name == "train":
            return EngineInit(self, e.time).lines()
        return []

    # -- training ---------------------------------------------------------------
    def _step(self, e: ev.Step) -> list[Line]:
        self.global_step = e.step
        self.timer_steps += 1
        if self.timer_steps > TIMER_START:
            self.timed.append(e.step_time_s)
        out: list[Line] = []
        skip = self.scaler.update(e.overflow)
        if skip is not None:
            self.skipped += 1
            out += self.log(e.time, *skip_record(skip))
        every = self.ident.hyper.log_every
        if e.step % every == 0:  # engine._report_progress
            # A skipped step does not step the LR scheduler: the LR lags by `skipped`.
            lr = [sim.learning_rate(self.ident, e.step - self.skipped)] * PARAM_GROUPS
            out += self.dist(e.time, f"step={e.step}, skipped={self.skipped}, lr={lr}, mom={MOMENTA}")
        if self.timed and self.timer_steps % every == 0:  # the timer counts the steps it saw itself
            out += self.log(e.time + 0.0004, "timer", self._throughput(e))
        if e.step % every == 0:  # the script's `if step % log_every == 0`
            out += self.script(e.time + 0.0009, f"Loss: {e.loss:.4f}")
        return out

    def _throughput(self, e: ev.Step) -> str:
        """ThroughputTimer.stop: samples/s over the timed steps and this one."""
        h = self.ident.hyper
        epsilon = 1e-6 if self.v["timer_epsilon"] else 0.0  # TIME_EPSILON, from 0.15
        running = h.global_batch / (sum(self.timed) / len(self.timed))
        return timer_text(self.timer_steps, self.timer_steps * h.grad_accum, running,
                          h.global_batch / (e.step_time_s + epsilon), Memory(self.ident).steady(),
                          sim.memory_bytes(self.ident, 0)[0])

    def _validation(self, e: ev.Validation) -> list[Line]:
        # DeepSpeed-Chat's evaluation print, through the script's logger.
        return self.script(e.time, f"ppl: {e.val_ppl}, loss: {e.val_loss}")

    # -- saving ---------------------------------------------------------------
    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        """model_engine.save_checkpoint(save_dir): tag global_step<N>."""
        save_dir = os.path.dirname(e.path.rstrip("/")) or "."
        saved = CheckpointSave(self, e, save_dir, f"global_step{e.step}").lines()
        return saved + self.script(e.time, f"Saved model to {save_dir}")

    def _export(self, e: ev.Export) -> list[Line]:
        """model_engine.save_16bit_model(output_dir): rank 0 writes pytorch_model.bin."""
        tag, path = f"global_step{self.global_step}", f"{e.path.rstrip('/')}/pytorch_model.bin"
        start = e.time - e.seconds
        out = self.dist(start, f"[Torch] Checkpoint {tag} is about to be saved!")
        out += self.log(start + 0.002, "weights", f"Saving model weights to {path}, tag: {tag}")
        if "ckpt_saving" in self.v:
            out += self.log(start + 0.003, "ckpt_saving", f"[Torch] Saving {path}...")
            out += self.log(e.time - 0.002, "ckpt_saved", f"[Torch] Saved {path}.")
            for rank in range(self.ident.world):
                out += self.log(e.time - 0.001, "ckpt_ready", f"[Torch] Checkpoint {tag} is ready now!", rank)
        return out


class Memory:
    """What torch's allocator tells rank 0, from the run's memory model: fp16
    weights and grads, the fp32 master copy and Adam's moments (12 bytes a
    parameter), sharded by ZeRO over data parallelism."""

    def __init__(self, ident: Identity) -> None:
        state = state_bytes(ident.model, ident.parallel)
        self.weights, self.grads, self.optimizer = state["weights"], state["grads"], state["optimizer"]
        self.master = self.optimizer / 3  # fp32 params; exp_avg and exp_avg_sq are the rest
        self.zero = ident.parallel.zero
        self.layer = 2 * ident.model.params / (ident.parallel.tp * ident.parallel.pp) / ident.model.layers

    def steady(self) -> float:
        """Allocated between steps (ZeRO-3 also keeps its gradient partition)."""
        return self.weights + self.optimizer + (self.grads if self.zero >= 3 else 0.0)

    def stage12(self) -> list[tuple[str, float, float]]:
        """(title, allocated, peak since the last report) through ZeRO-1/2's set-up:
        flattening copies the weights, a zero fp32 grad initialises the states."""
        ready, flattening = self.weights + self.master, self.weights + max(self.weights, self.master)
        return [("Before initializing optimizer states", ready, flattening),
                ("After initializing optimizer states", ready, ready + self.master),
                ("After initializing ZeRO optimizer", ready, ready)]

    def stage3(self, subgroups: int) -> list[tuple[str, float, float]]:
        """The same through ZeRO-3's: parameters arrive partitioned (zero.Init
        gathers one layer at a time), then fp16 and fp32 partitions are built."""
        w, ready = self.weights, self.weights + self.master
        return [("Stage 3 initialize beginning", w, w + self.layer),
                ("DeepSpeedZeRoOffload initialize [begin]", w, w),
                ("DeepSpeedZeRoOffload initialize [end]", w, w),
                ("Before creating fp16 partitions", w, w),
                (f"After creating fp16 partitions: {subgroups}", w, 2 * w),
                ("Before creating fp32 partitions", w, w),
                ("After creating fp32 partitions", ready, ready),
                ("Before initializing optimizer states", ready, ready),
                ("After initializing optimizer states", ready, ready + self.master),
                ("After initializing ZeRO optimizer", ready + self.grads, ready + self.grads)]


class EngineInit:
    """deepspeed.initialize(model, optimizer, lr_scheduler, config) as rank 0
    logs it (and every rank, from 0.15, the DeepSpeedConfig mesh line)."""

    def __init__(self, out: DeepSpeedLines, start: float) -> None:
        self.out, self.ident, self.v = out, out.ident, out.v
        self.t = start
        # Everything fits well before the first step ends, whatever the model.
        self.unit = min(INIT_SPAN_S, 0.5 * sim.compute_seconds(self.ident, 1)) / 100
        self.memory = Memory(self.ident)
        self.reserved = 0.0
        self.reports = 0

    def tick(self, units: float = 0.01) -> float:
        self.t += units * self.unit
        return self.t

    def lines(self) -> list[Line]:
        o, i, z = self.out, self.ident, self.ident.parallel.zero
        out = o.script(self.t, "Creating DeepSpeed engine")
        out += o.dist(self.tick(1), f"DeepSpeed info: version={i.versions.deepspeed}, git-hash=unknown, "
                                    "git-branch=unknown")
        if "mesh" in self.v:
            for rank in range(i.world):
                out += o.log(self.tick(), "mesh", f"Config mesh_device None world_size = {i.parallel.dp}",
                             rank)
        # Broadcasting the model's weights from rank 0 takes most of the set-up.
        out += o.dist(self.tick(25), "DeepSpeed Flops Profiler Enabled: False")
        out += o.dist(self.tick(), "Using client Optimizer as basic optimizer")
        out += o.dist(self.tick(), "Removing param_group that has no 'params' in the basic Optimizer")
        out += o.dist(self.tick(0.5), "DeepSpeed Basic Optimizer = AdamW")
        out += o.log(self.tick(), "zero_support",
                     "Checking ZeRO support for optimizer=AdamW type=<class 'torch.optim.adamw.AdamW'>")
        if z >= 3:
            out += o.dist(self.tick(), "Creating fp16 ZeRO stage 3 optimizer, MiCS is enabled False, "
                                       "Hierarchical params gather False")
        out += o.dist(self.tick(), f"Creating torch.float16 ZeRO stage {z} optimizer")
        out += self._stage3() if z >= 3 else self._stage12()
        out += self._scheduler() + self._config() + o.script(self.tick(1), "DeepSpeed engine created")
        return out + o.script(self.tick(), f"Total number of model parameters: {self._local_params():,d}")

    def _local_params(self) -> int:
        p = self.ident.parallel
        return self.ident.model.params // (p.tp * p.pp)

    def _stage12(self) -> list[Line]:
        o = self.out
        out = o.log(self.tick(), "reduce_bucket", f"Reduce bucket size {BUCKET}")
        out += o.log(self.tick(0), "allgather_bucket", f"Allgather bucket size {BUCKET}")
        out += o.log(self.tick(), "cpu_offload", "CPU Offload: False")
        out += o.log(self.tick(0), "round_robin", "Round robin gradient partitioning: False")
        before, after, done = self.memory.stage12()
        out += self._report(*before) + self._report(*after)
        out += o.log(self.tick(0), "state_initialized", "optimizer state initialized")
        return out + self._report(*done)

    def _stage3(self) -> list[Line]:
        o, i = self.out, self.ident
        shard = i.model.params / (i.parallel.tp * i.parallel.pp) / i.parallel.dp
        blocks = self.memory.stage3(max(1, math.ceil(shard / SUB_GROUP)))
        out = self._report(*blocks[0])
        out += o.log(self.tick(), "z3_reduce_bucket", f"Reduce bucket size {BUCKET}")
        prefetch = f"{PREFETCH:,}" if self.v.get("pp_int") else str(PREFETCH)
        out += o.log(self.tick(), "z3_prefetch_bucket", f"Prefetch bucket size {prefetch}")
        out += self._report(*blocks[1])
        if self.v["persistent_print"]:  # print_rank_0(..., force=True): a bare print
            norms = 2 * i.model.layers + 1  # every RMSNorm weight is under the persistence threshold
            out.append(Line(f"Parameter Offload: Total persistent parameters: {norms * i.model.hidden} "
                            f"in {norms} params", STDOUT, 0))
        for block in blocks[2:9]:
            out += self._report(*block)
        out += o.log(self.tick(0), "z3_state_initialized", "optimizer state initialized")
        return out + self._report(*blocks[9])

    def _report(self, title: str, allocated: float, peak: float) -> list[Line]:
        """see_memory_usage(title, force=True): rank 0, then it resets the peaks."""
        self.reserved = max(self.reserved, peak * 1.015 + 20 * 2**20)  # the caching allocator keeps blocks
        self.reports += 1
        o, t = self.out, self.tick(5)
        figures = memory_figures(allocated, peak, self.reserved)
        out = o.log(t, "mem_title", title) + o.log(t, "mem_figures", figures)
        return out + o.log(t, "mem_cpu", self._host())

    def _host(self) -> str:
        """psutil's view of the node: the ranks' host memory (CUDA context,
        pinned buffers, the fp16 model they loaded) over a node sized to its GPUs."""
        i = self.ident
        total = 2 ** math.ceil(math.log2(2 * i.nproc * i.gpu.memory_mib / 1024))
        used = 22.6 + i.nproc * (3.1 + 2 * self._local_params() / GIB) + 0.03 * self.reports
        return f"CPU Virtual Memory:  used = {round(used, 2)} GB, percent = {round(100 * used / total, 1)}%"

    def _scheduler(self) -> list[Line]:
        o = self.out
        final = "DeepSpeedZeroOptimizer_Stage3" if self.ident.parallel.zero >= 3 else "DeepSpeedZeroOptimizer"
        out = o.dist(self.tick(), f"DeepSpeed Final Optimizer = {final}")
        out += o.dist(self.tick(0), "DeepSpeed using client LR scheduler")
        out += o.dist(self.tick(0), "DeepSpeed LR Scheduler = <torch.optim.lr_scheduler.LambdaLR object at "
                                    f"{self._address('lr_scheduler')}>")
        lr = [sim.learning_rate(self.ident, 0)] * PARAM_GROUPS  # LambdaLR's warmup starts from 0
        out += o.dist(self.tick(0), f"step=0, skipped=0, lr={lr}, mom={MOMENTA}")
        if self.v.get("ckpt_engine_init"):
            out += o.dist(self.tick(), "[TorchCheckpointEngine] Initialized with serialization = True")
        return out

    def _address(self, what: str) -> str:
        """A CPython object address: stable for the run's seed."""
        return f"0x7f{sim.rng(self.ident.seed, 'ds-address', what).randrange(2**36, 2**40) & ~0xF:010x}"

    def _config(self) -> list[Line]:
        """DeepSpeedConfig.print, then print_user_config: the dict the script passed."""
        i, o, t = self.ident, self.out, self.tick()
        h, p = i.hyper, i.parallel
        values = {"comms_addr": self._address("comms_config"), "init_scale": 2**SCALE_POWER,
                  "scale_power": SCALE_POWER, "scale_window": SCALE_WINDOW, "hysteresis": HYSTERESIS,
                  "grad_accum": h.grad_accum, "clip": CLIP, "steps_per_print": h.log_every,
                  "train_batch_size": h.global_batch, "micro_batch": h.micro_batch, "dp": p.dp,
                  "stage": p.zero, "gather16": p.zero >= 3}
        out = o.log(t, "config_print", "DeepSpeedEngine configuration:")
        for name, value in config_dump(i.versions.deepspeed, values):
            out += o.log(self.tick(0.005), "config_item", config_line(name, value))
        return out + o.log(self.tick(0.005), "user_config", f"  json = {ds_json(user_config(i))}")


def user_config(ident: Identity) -> dict[str, Any]:
    """The script's DeepSpeed config, in the order it writes it."""
    h, zero = ident.hyper, ident.parallel.zero
    zero_section: dict[str, Any] = {"stage": zero, "overlap_comm": True, "contiguous_gradients": True,
                                    "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8}
    if zero >= 3:
        zero_section["stage3_gather_16bit_weights_on_model_save"] = True
    return {"train_batch_size": h.global_batch, "train_micro_batch_size_per_gpu": h.micro_batch,
            "gradient_accumulation_steps": h.grad_accum, "steps_per_print": h.log_every,
            "gradient_clipping": CLIP,
            "fp16": {"enabled": True, "loss_scale": 0, "loss_scale_window": SCALE_WINDOW,
                     "initial_scale_power": SCALE_POWER, "hysteresis": HYSTERESIS,
                     "min_loss_scale": MIN_SCALE},
            "zero_optimization": zero_section, "wall_clock_breakdown": False}


class CheckpointSave:
    """engine.save_checkpoint: rank 0 announces the tag, each data-parallel
    rank 0 (every rank, under ZeRO-3) writes its model states, every rank
    then writes its own optimizer shard (fp16: no bf16_ prefix)."""

    def __init__(self, out: DeepSpeedLines, e: ev.Checkpoint, save_dir: str, tag: str) -> None:
        self.out, self.e, self.tag = out, e, tag
        p = out.ident.parallel
        self.mp_size, self.zero3 = p.tp * p.pp, p.zero >= 3
        self.folder = f"{save_dir}/{tag}"
        self.ranks = range(out.ident.world)

    def model_path(self, rank: int) -> str:
        mp, dp = rank % self.mp_size, rank // self.mp_size
        name = f"zero_pp_rank_{dp}_mp_rank_{mp:02d}" if self.zero3 else f"mp_rank_{mp:02d}"
        return f"{self.folder}/{name}_model_states.pt"

    def shard_path(self, rank: int) -> str:
        mp, dp = rank % self.mp_size, rank // self.mp_size
        return f"{self.folder}/zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt"

    def lines(self) -> list[Line]:
        o, v, e = self.out, self.out.v, self.e
        start = e.time - e.seconds
        writers = [r for r in self.ranks if self.zero3 or r // self.mp_size == 0]
        out = o.dist(start + 0.001, f"[Torch] Checkpoint {self.tag} is about to be saved!")
        for rank in writers:
            if rank in v["model_ckpt_ranks"]:
                out += o.dist(start + 0.02, f"Saving model checkpoint: {self.model_path(rank)}", rank)
            if "ckpt_saving" in v:
                out += o.log(start + 0.02, "ckpt_saving", f"[Torch] Saving {self.model_path(rank)}...", rank)
        if "ckpt_saved" not in v:  # 0.18: torch.save is no longer announced
            return out
        models_done = start + 0.3 * e.seconds
        for rank in writers:
            out += o.log(models_done, "ckpt_saved", f"[Torch] Saved {self.model_path(rank)}.", rank)
        shards = {rank: self.shard_path(rank) for rank in self.ranks}
        for rank, shard in shards.items():
            out += o.log(models_done + 0.01, "ckpt_saving", f"[Torch] Saving {shard}...", rank)
        for rank, shard in shards.items():
            out += o.log(e.time - 0.05, "ckpt_saved", f"[Torch] Saved {shard}.", rank)
            out += o.log(e.time - 0.049, "zero_saved", f"zero checkpoint saved {shard}", rank)
        for rank in self.ranks:
            out += o.log(e.time - 0.01, "ckpt_ready", f"[Torch] Checkpoint {self.tag} is ready now!", rank)
        return out
