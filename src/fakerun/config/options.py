"""The options of one job (`RunConfig`), each value checked as it is made;
plan.plan() then derives the run they describe. Everything is checked
before any process starts, so a bad value is a one-line usage error (exit 2)
rather than a half-started job.
"""

from __future__ import annotations

import re
import secrets
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fakerun.config.launch import Launch
from fakerun.errors import UsageError
from fakerun.world import xid
from fakerun.world.identity import Asked
from fakerun.world.settings import Settings
from fakerun.world.styles import Style
from fakerun.world.topology import Topology

OUTPUTS = ("auto", "plain", "rich", "jsonl")
# A paced run sleeps simulated time / speed: below a thousandth of real time
# nobody watches (a 1 s step takes 17 minutes), and 1e-300 overflowed the
# ranks' sleeps; above a million times real time pacing is no pacing.
MIN_SPEED, MAX_SPEED = 1e-3, 1e6
# Real pretraining runs take up to ~1M optimizer steps (Llama 3 405B: 15.6T
# tokens at 16M a batch). The loss-spike table every rank draws up front
# grows with the run's length: 0.6 MiB and 0.05 s per rank at this bound,
# 6 MiB and 0.23 s at ten times it (and a hang before the first step at 1e13).
MAX_STEPS = 1_000_000
PID_MAX = 1 << 22  # Linux's largest kernel.pid_max
# Strings every rank sends in its hello, so that they also fit a directory
# name and the wire (a longer one made the hello undecodable: no rank could
# join, a 900 s rendezvous wait). torchrun names a directory after the run id
# (`<id>_<8 random>`, at most 255 bytes); a DNS host name has at most 253
# characters (RFC 1035); a token is a line of a --token-file, read up to 4 KiB.
MAX_RUN_ID, MAX_HOST, MAX_TOKEN = 246, 253, 4096
# Tokens in one optimizer step (global batch x sequence). The largest batches
# of real pretraining are 16M tokens (Llama 3 405B) to 63M (DeepSeek-V3);
# 2^32 is 68 times that, and exactly what fakerun's largest job (2^17 ranks)
# takes at the largest micro batch (8) and sequence (4096) it plans by itself.
# Beyond it, `--gradient_accumulation_steps 99999999999` made each step a
# simulated century, which the coordinator refused: a 600 s watchdog wait.
MAX_TOKENS_PER_STEP = 1 << 32
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


@dataclass(frozen=True)
class Fault:
    """An injected fault: `kind` happens on `rank` at `step` (None: half way)."""

    kind: str
    rank: int
    step: int | None = None
    params: tuple[tuple[str, float], ...] = ()
    recurs: bool = False  # in every restarted attempt too (a bug of the script), not only the first

    def param(self, name: str) -> float:
        return dict(self.params)[name]

    def next_attempt(self, resumed: int) -> Fault | None:
        """The fault in a restarted attempt that resumes after step
        `resumed`: none, or (`recurs`) the script's own bug again at its
        step; a GPU an Xid left unusable until a reset (fallen off the bus,
        an uncontained ECC error: the recurring Xids) still is, and the
        attempt's rank on it fails at its first step."""
        if not self.recurs:
            return None
        return replace(self, step=resumed + 1) if self.kind == xid.KIND else self


@dataclass(frozen=True)
class RunConfig:
    topology: Topology
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    master_port_given: bool = False
    rdzv_id: str | None = None
    max_restarts: int = 0
    max_steps: int | None = None  # None: the run's identity decides
    seed: int = 0
    speed: float = 1.0
    output: str = "auto"
    log_dir: Path | None = None
    metrics_file: Path | None = None
    tensorboard: Path | None = None  # --tensorboard DIR: the style's own event writer, there
    metrics_port: int | None = None  # --metrics-port: this node's dcgm-exporter endpoint (None: none)
    metrics_addr: str = "127.0.0.1"  # --metrics-addr: where it listens
    pod: tuple[tuple[str, str], ...] = ()  # the Kubernetes pod holding the GPUs: dcgm-exporter's pod labels
    output_dir: Path | None = None
    resume: str | None = None  # "latest" (in --output-dir) or a checkpoint/output directory
    sparse_checkpoints: bool = False  # weight shards of their true size, as holes
    entrypoint: str = "train.py"
    script_args: tuple[str, ...] = ()
    launch: Launch = field(default_factory=Launch)  # -m, --no-python, --run-path and the agent's options
    collective_timeout_s: float = 600.0
    rdzv_timeout_s: float = 900.0
    shutdown_grace_s: float = 5.0
    fault: Fault | None = None
    model: str | None = None
    gpu: str | None = None
    jokes: float = 0.0  # the chance a draw is a joke row (identity.JOKES_*): cli.main.joke_rate decides
    start_time: str | None = None
    exit_after_s: float | None = None
    loop: bool = False
    token: str = ""  # the job's shared secret: needed by every node (--token / FAKERUN_TOKEN)
    # Where the other nodes find the token, so that node 0's join hint need not print it:
    token_file: Path | None = None  # --token-file
    token_job: str | None = None  # the Slurm job id it was derived from (with the per-user secret)
    node_timeout_s: float = 30.0  # how long another node may stay silent before it is lost
    lifeline: int | None = None  # a pid whose exit ends this agent (the local cluster's parent)
    style: Style = field(default_factory=Style)  # whose output conventions the run follows
    asked: Asked = field(default_factory=Asked)  # what the training script's arguments fix
    settings: Settings = field(default_factory=Settings)  # the flags and environment deciding the output
    run_id: str = field(default="")
    identity: Any = None  # identity.Identity, built from the fields above
    resume_from: Any = None  # checkpoint.Resume, found from `resume`
    # srun's one task per rank (cli/slurm.py): this process runs local rank
    # `task` of its node alone, as one of the job's agents (see `agents`).
    task: int | None = None
    # Under one task a rank, the Slurm job a Lightning script's SLURMEnvironment
    # requeues on SIGUSR1 (cli/slurm.py requeue_job); None when it would not.
    requeue_job: str | None = None

    @property
    def requeues(self) -> bool:
        """Lightning's SLURM auto-requeue is on: on SIGUSR1 its ranks save
        hpc_ckpt_N.ckpt and train on while global zero requeues the job."""
        return self.task is not None and self.requeue_job is not None and self.style.name == "lightning"

    def __post_init__(self) -> None:
        """The option values alone; what needs the disk, the catalog or a
        checkpoint is plan.plan()'s."""
        _check_port(self.master_port)
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be in 1-65535, got {self.metrics_port}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.max_steps is not None and self.max_steps > MAX_STEPS:
            raise UsageError(f"--max-steps {self.max_steps}: more steps than real runs take "
                              f"(at most {MAX_STEPS})")
        if self.lifeline is not None and not 0 < self.lifeline <= PID_MAX:  # psutil overflowed on 1e20
            raise UsageError(f"--lifeline must be a process id, got {self.lifeline}")
        if not (self.speed == 0 or MIN_SPEED <= self.speed <= MAX_SPEED):  # also rejects NaN
            raise UsageError(f"--speed must be 0 (no pacing) or between {MIN_SPEED:g} and {MAX_SPEED:g}, "
                              f"got {self.speed}")
        if self.agents.nnodes > 1:
            self._check_multinode()
        if self.output not in OUTPUTS:
            raise UsageError(f"--output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        for name in ("collective_timeout_s", "rdzv_timeout_s", "shutdown_grace_s", "node_timeout_s"):
            if not getattr(self, name) > 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise UsageError(f"{flag} must be > 0 seconds, got {getattr(self, name)}")
        if self.exit_after_s is not None and not self.exit_after_s > 0:
            raise UsageError(f"--exit-after-time must be > 0, got {self.exit_after_s}")
        if self.start_time is not None:
            from fakerun.world.clock import parse_start

            try:
                parse_start(self.start_time)
            except ValueError as exc:
                raise UsageError(str(exc)) from None

    @property
    def metrics_listen(self) -> int | None:
        """The port this agent's endpoint takes: --metrics-port, plus k on
        node k of a local cluster (--nodes M: every agent on this machine)."""
        if self.metrics_port is None:
            return None
        return self.metrics_port + (self.topology.node_rank if self.lifeline is not None else 0)

    @property
    def agents(self) -> Topology:
        """The processes that rendezvous with the coordinator, as it counts
        them: a node's agent each under torchrun; under srun's one task per
        rank, every task is an agent of one rank, placed by its global rank
        (the coordinator's protocol is the same either way)."""
        topo = self.topology
        if self.task is None:
            return topo
        return Topology(topo.world_size, 1, topo.global_rank(self.task))

    def _check_multinode(self) -> None:
        agent = self.agents.node_rank
        if agent > 0 and not self.token:
            who = f"--node-rank {agent}" if self.task is None else f"srun's task {agent}"
            raise UsageError(f"{who} needs the job's token: FAKERUN_TOKEN or "
                              "--token-file (node 0 says where it is while it waits)")
        for flag, value in (("--max-restarts", self.max_restarts), ("--resume", self.resume)):
            if value:
                raise UsageError(f"{flag} is not supported with --nnodes > 1 yet")

    def digest(self) -> str:
        """What every node must agree on to run one job together."""
        import hashlib

        agreed = (self.topology.nnodes, self.topology.nproc_per_node, self.seed, self.steps,
                  self.identity.model.name, self.identity.gpu.name, self.fault, self.speed,
                  self.start_time, self.entrypoint, self.script_args, self.collective_timeout_s,
                  str(self.style), self.asked)
        return hashlib.sha256(repr(agreed).encode()).hexdigest()[:16]

    @property
    def bounds(self) -> Any:
        """physics.Bounds: the largest figures a rank of this plan reports."""
        from fakerun.world import pace
        from fakerun.world import physics as sim

        return sim.bounds(self.identity, pace.slowest(self.identity, self.fault))

    @property
    def steps(self) -> int:
        return self.identity.hyper.total_steps

    @property
    def deterministic(self) -> bool:
        """--start-time fixes every displayed time and pid: same seed, same bytes."""
        return self.start_time is not None

def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--master-port must be in 1-65535, got {port}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, as torchrun picks MASTER_PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def new_seed() -> int:
    return secrets.randbelow(2**31)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h30m`, `1.5h` -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"--exit-after-time {text!r}: expected a duration like 90s, 5m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
