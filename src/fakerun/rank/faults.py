"""The faults a scenario injects into the training script (world/scenarios
names them; data/torchrun.toml and the styles' data hold what the script
prints as it fails), and how the script dies of each."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass

from fakerun import texts
from fakerun.config.launch import RUNPY_RUN_PATH
from fakerun.config.options import RunConfig
from fakerun.errors import FakerunError
from fakerun.world import pace, xid
from fakerun.world import physics as sim
from fakerun.world.allocator import out_of_memory
from fakerun.world.draws import rng
from fakerun.world.identity import ENV_PREFIX, Identity
from fakerun.world.kfd import kfd_gpu
from fakerun.world.topology import peer_port


class SimulatedExit(FakerunError):
    """The training script called sys.exit(code) on its own."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Faults:
    """This rank's view of the run's fault (config.fault)."""

    config: RunConfig
    ident: Identity
    rank: int

    def preemption_aware(self) -> bool:
        return self.config.fault is not None and self.config.fault.kind == "preempt"

    def strike(self, step: int) -> None:
        """What the fault does at its step: hang, die, exit or be preempted."""
        fault = self.config.fault
        if fault is None or step != fault.step:
            return
        mine = fault.rank == self.rank
        if fault.kind == "hang" or (fault.kind == "stall" and mine):
            while True:  # no more progress; with "stall" the peers' watchdog fires
                time.sleep(3600)
        node_of = self.ident.topology.node_of
        if fault.kind == "node-down" and node_of(self.rank) == node_of(fault.rank):
            raise SimulatedSignal(signal.SIGKILL)
        if not mine:
            return
        if fault.kind == "preempt":  # the scheduler's SIGTERM, to the launcher as it would be
            os.kill(os.getppid(), signal.SIGTERM)
            return
        if fault.kind == "crash" and self.ident.gpu.vendor == "amd":
            raise SimulatedSignal(signal.SIGABRT, [script_text(self.config, "memory_fault",
                                                               **memory_fault(self.ident, self.rank))])
        if fault.kind == "crash":
            raise ScriptFailed(script_text(self.config, "crash").split("\n"))
        if fault.kind == xid.KIND:  # its CUDA error, where the crash's surfaces: the step's next sync
            text = script_text(self.config, "crash", cuda_message=xid.cuda_error(int(fault.param("code"))))
            raise ScriptFailed(text.split("\n"))
        if fault.kind == "oom":
            sizes = oom_sizes(self.ident, self.rank, step)
            raise ScriptFailed(script_text(self.config, "oom", **sizes).split("\n"))
        if fault.kind == "exit":
            raise SimulatedExit(1)
        if fault.kind == "segv":
            raise SimulatedSignal(signal.SIGSEGV)

    def apply(self, step: int, loss: float, grad_norm: float, sim_s: float) -> tuple[float, float, float]:
        """This step's values under the scenario's fault (spike, nan, slow, thermal)."""
        fault = self.config.fault
        if fault is None or step < fault.step:
            return loss, grad_norm, sim_s
        if fault.kind == "spike":
            h = self.ident.hyper
            decay = sim.visible_decay(fault.step, fault.param("decay"), h.log_every, h.total_steps)
            bump = fault.param("height") * math.exp(-(step - fault.step) / decay)
            return loss * (1 + bump), grad_norm * (1 + 8 * bump), sim_s
        if fault.kind == "nan" and fault.rank == self.rank:
            return math.nan, math.nan, sim_s
        # A straggler, a throttled GPU: slower work, for which every peer waits at the all-reduce.
        return loss, grad_norm, sim_s * pace.compute_factor(self.ident, fault, self.rank, step)


# The library whose frames each style's tracebacks pass through (data/frames.toml's
# tables, by the run's version of it); torch's frames are under every style's.
STYLE_LIBRARY = {"hf": "transformers", "deepspeed": "deepspeed", "lightning": "lightning",
                 "megatron": "megatron"}


def script_text(config: RunConfig, key: str, **values: object) -> str:
    """A text the training script prints, for this run: data/torchrun.toml's
    [script] table, overridden by the style's own (data/style-<name>.toml),
    each with the frames of the run's pinned versions (data/frames.toml);
    `values` fill its fields, and replace the table's entries of their names
    (an Xid's `cuda_message` over the rank-crash's)."""
    style = texts.optional(f"style-{config.style.name}")
    own = {**style.get("script", {}), **library_frames(config, STYLE_LIBRARY.get(config.style.name))}
    script = {**texts.load("torchrun")["script"], **library_frames(config, "torch"), **own}
    if config.identity.gpu.vendor == "amd":  # torch's ROCm wheel: its own texts, over the style's
        script |= {**texts.load("torchrun")["script_rocm"], **style.get("script_rocm", {})}
    script |= {name: str(value) for name, value in values.items() if name in script}
    if key.startswith("interrupt") and key not in own and "interrupt" in own:
        key = "interrupt"  # the framework's script, wherever it is: its step's frames, not train.py's
    versions = config.identity.versions
    site = f"{ENV_PREFIX}/lib/python{versions.python}/site-packages"
    frames = texts.torchrun(versions.torch)["frames"]
    entry = config.launch.script_path(config.entrypoint)
    text = _expand(script[key], script).format(cwd=script["cwd"], entrypoint=entry, site=site,
                                               nccl=versions.nccl, record_wrapper=frames["record_wrapper"],
                                               **values).rstrip("\n")
    where = entry if entry.startswith("/") else f"{script['cwd']}/{entry}"
    run_path = script["run_path_frames"].format(
        record_frame=script["record_frame"].format(site=site, record_wrapper=frames["record_wrapper"]),
        site=site, run_script_path=frames["run_script_path"], runpy_line=RUNPY_RUN_PATH[versions.python])
    return config.launch.entry_frames(text, where, run_path, entry)


def library_frames(config: RunConfig, library: str | None) -> dict[str, str]:
    """data/frames.toml's frames of `library` at the run's version of it
    (none for a version it has no table for)."""
    if library is None:
        return {}
    # A ROCm wheel ("2.5.1+rocm6.2") ships the same Python files as the CUDA one.
    version = getattr(config.identity.versions, library).split("+")[0]
    return texts.load("frames").get(library, {}).get(version, {})


def _expand(text: str, table: dict[str, str]) -> str:
    """Put in the table's own entries that `text` names (`{torch_backward}`),
    and theirs in turn: the tracebacks share their framework's frames."""
    while (names := [k for k in table if f"{{{k}}}" in text]):
        for name in names:
            text = text.replace(f"{{{name}}}", table[name])
    return text


def peer_lost(config: RunConfig, peer_host: str, rank: int) -> list[str]:
    """What a rank prints when NCCL finds that another node's rank is gone."""
    return script_text(config, "peer_lost", peer=peer_host, port=peer_port(rank)).split("\n")


class ScriptFailed(FakerunError):
    """The training script died of an exception; `lines` is its traceback."""

    def __init__(self, lines: list[str], code: int = 1, stream: str = "stderr") -> None:
        super().__init__(lines[-1] if lines else "")
        self.lines = lines
        self.code = code
        self.stream = stream  # stderr: a traceback (torch prefixes it); stdout: a print


class ScriptInterrupted(FakerunError):
    """The training script took a SIGINT (KeyboardInterrupt) in phase
    `where`; `key` names its traceback in the [script] table."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.key = "interrupt" if where == "train" else f"interrupt_{where}"


class SimulatedSignal(FakerunError):
    """The process is to die of this signal (a crash in native code, the OOM
    killer...), after the `lines` native code writes to stderr first."""

    def __init__(self, sig: signal.Signals, lines: list[str] | None = None) -> None:
        super().__init__(sig.name)
        self.sig = sig
        self.lines = lines or []


def memory_fault(ident: Identity, rank: int) -> dict[str, str]:
    """The HSA runtime's fault report of the rank's GPU: its KFD node, the
    agent's handle (a heap pointer of the process) and the faulting page, a
    device address of the process's GPU mappings."""
    r = rng(ident.seed, "memory-fault", rank)
    local = ident.topology.local_rank_of(rank)
    node = kfd_gpu(ident.seed, ident.topology.node_of(rank), ident.gpu, local).node_id
    return {"node": str(node), "agent": f"0x{(0x55 << 40 | r.getrandbits(40)) & ~0xF:x}",
            "address": f"0x{(0x7F << 40 | r.getrandbits(40)) & ~0xFFF:x}"}


def oom_sizes(ident: Identity, rank: int, step: int) -> dict[str, str]:
    """torch's CUDA OOM figures, from the run's memory model."""
    oom = out_of_memory(ident, rank, step)
    return {"device": str(ident.topology.local_rank_of(rank)), "total": format_size(oom.total),
            "free": format_size(oom.free), "in_use": format_size(oom.in_use),
            "allocated": format_size(oom.allocated), "unallocated": format_size(oom.unallocated),
            "tried": format_size(oom.tried)}


def format_size(n: float) -> str:
    """c10's format_size: bytes, KiB, MiB or GiB with two decimals."""
    if n <= 1024:
        return f"{int(n)} bytes"
    for unit, size in (("KiB", 2**10), ("MiB", 2**20)):
        if n <= size * 1024:
            return f"{n / size:.2f} {unit}"
    return f"{n / 2**30:.2f} GiB"
