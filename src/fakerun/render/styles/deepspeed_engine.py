"""deepspeed.initialize as a DeepSpeed script logs it: the engine, the ZeRO
optimizer with its memory reports, the scheduler and the config dump."""

from __future__ import annotations

import math

from fakerun.render.lines import STDOUT, Line
from fakerun.render.styles.deepspeed_checkpoint import CheckpointLoad
from fakerun.render.styles.deepspeed_config import (
    MOMENTA,
    PARAM_GROUPS,
    config_dump,
    config_line,
    ds_json,
    dump_values,
)
from fakerun.render.styles.deepspeed_log import DeepSpeedLog
from fakerun.render.styles.deepspeed_memory import GIB, Memory, memory_figures
from fakerun.world import physics as sim
from fakerun.world.ds_config import user_config
from fakerun.world.identity import Identity

BUCKET = 500_000_000  # reduce/allgather bucket sizes, written 5e8 in the config
PREFETCH = 50_000_000  # ZeRO-3's default stage3_prefetch_bucket_size
SUB_GROUP = 1_000_000_000  # ZeRO-3's default sub_group_size
INIT_SPAN_S = 4.0  # deepspeed.initialize's wall time (at most half the first step)
RANK_SPREAD_S = 0.02  # how far apart the ranks' processes log the same moment of the set-up
LOAD_SHARE = 0.8  # of the first step's window left after initialize, at most, a resume's load takes


class EngineInit:
    """deepspeed.initialize(model, optimizer, lr_scheduler, config) as rank 0
    logs it (and every rank, from 0.15, the DeepSpeedConfig mesh line)."""

    def __init__(self, out: DeepSpeedLog, ident: Identity, start: float,
                 load: CheckpointLoad | None = None) -> None:
        self.out, self.ident, self.v = out, ident, out.v
        self.t = self.start = start
        self.load = load  # the script's model_engine.load_checkpoint, when it resumes
        # Everything fits well before the first step ends, whatever the model.
        self.first_s = sim.compute_seconds(self.ident, load.step + 1 if load else 1)
        self.unit = min(INIT_SPAN_S, 0.5 * self.first_s) / 100
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
            built, spread = self.tick(), min(RANK_SPREAD_S, 10 * self.unit)  # well before the next line
            for rank in range(i.world):  # each process builds its DeepSpeedConfig at its own pace
                when = built + spread * sim.uniform(i.seed, "ds-mesh", rank)
                out += o.log(when, "mesh", f"Config mesh_device None world_size = {i.parallel.dp}", rank)
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
        out += self._loaded()
        return out + o.script(self.tick(), f"Total number of model parameters: {self._local_params():,d}")

    def _loaded(self) -> list[Line]:
        """load_checkpoint, in what is left of the first step's window."""
        if self.load is None:
            return []
        window = self.start + self.first_s - self.t
        lines, self.t = self.load.lines(self.t + self.unit, LOAD_SHARE * window)
        return lines

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
        values = dump_values(i, self._address("comms_config"))
        out = o.log(t, "config_print", "DeepSpeedEngine configuration:")
        for name, value in config_dump(i.versions.deepspeed, values):
            out += o.log(self.tick(0.005), "config_item", config_line(name, value))
        return out + o.log(self.tick(0.005), "user_config", f"  json = {ds_json(user_config(i))}")
