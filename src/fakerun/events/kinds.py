"""Domain events: the one ordered stream every renderer consumes.

Events are plain data. Field names are part of the JSONL contract
({"v": 1, "event": NAME, ...}): add fields freely, never rename them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Failure:
    """One failed worker, torch elastic's ProcessFailure in our terms."""

    rank: int
    local_rank: int
    node_rank: int
    pid: int
    exitcode: int
    time: float
    host: str
    error_file: str = "<N/A>"
    message: str = ""
    # Seen once the launcher had begun tearing the group down (the ranks it
    # signalled): which torch lists these is data/torchrun.toml's [failures].
    after_close: bool = False


@dataclass(frozen=True)
class RunStarted:
    NAME: ClassVar[str] = "run_started"
    run_id: str
    world_size: int
    nnodes: int
    nproc_per_node: int
    node_rank: int
    seed: int
    entrypoint: str
    args: list[str]
    max_steps: int
    master_addr: str
    master_port: int
    launcher_pid: int
    restart_count: int
    time: float
    omp_default: bool = True  # OMP_NUM_THREADS was unset, so torchrun set it (and says so)
    output_dir: str = ""  # where the run saves its checkpoints (--output-dir, the script's own flag); "" none
    resumed_from: str = ""  # the checkpoint the run carries on from (--resume, Megatron's --load); "" none
    resumed_step: int = 0
    # The version directory the script's logger takes at this launch (Lightning's CSVLogger:
    # <root>/lightning_logs/version_N), for a style whose screen names it; 0 for the others.
    logger_version: int = 0
    # The Slurm job Lightning's SLURMEnvironment would `scontrol requeue` on SIGUSR1 (its
    # auto-requeue handlers are set: the script is srun's task); "" when they are not.
    requeue_job: str = ""
    # fakerun's --tensorboard DIR: the directory the script's own event writer is given (the
    # HF Trainer's logging dir, Megatron's --tensorboard-dir, Lightning's logger); "" none.
    tensorboard: str = ""


@dataclass(frozen=True)
class RankStarted:
    NAME: ClassVar[str] = "rank_started"
    rank: int
    local_rank: int
    node_rank: int
    pid: int
    env: dict[str, str]


@dataclass(frozen=True)
class RendezvousComplete:
    NAME: ClassVar[str] = "rendezvous"
    world_size: int
    ranks: list[int]
    pids: list[int]


@dataclass(frozen=True)
class RendezvousTimeout:
    """Not every rank joined within the rendezvous timeout."""

    NAME: ClassVar[str] = "rendezvous_timeout"
    timeout_s: float
    joined: list[int]
    world_size: int
    time: float
    missing_nodes: list[int] = field(default_factory=list)  # whose agent never joined (node 0's view)


@dataclass(frozen=True)
class RankOutput:
    """Lines a rank produced itself (not derived from other events)."""

    NAME: ClassVar[str] = "rank_output"
    rank: int
    stream: str
    lines: list[str]
    # The node whose agent says it: node 0, which has what the rank sent, or
    # the rank's own node, with its log's tail after an internal error.
    reported_by: int = 0


# ProcessGroupNCCL's OpType names, as its watchdog prints them.
NCCL_OP_TYPE = {"all_reduce": "ALLREDUCE", "broadcast": "BROADCAST", "barrier": "BARRIER"}


@dataclass(frozen=True)
class Collective:
    NAME: ClassVar[str] = "collective"
    comm: str
    op: str
    seq: int
    count: int
    dtype: str
    ranks: list[int]
    duration_us: int  # simulated NCCL time for `numel` elements
    tag: str
    numel: int = 0
    wall_us: int | None = None  # our real round trip (None when --start-time fixes output)
    wait_us: int = 0  # simulated time the first rank in waited for the last (a straggler shows here)


@dataclass(frozen=True)
class RunIdentity:
    """Everything the run is (model, GPU, software, data, parallelism,
    hyper-parameters): the source of every figure shown."""

    NAME: ClassVar[str] = "run_identity"
    identity: Any


@dataclass(frozen=True)
class Phase:
    """A phase (init, train, validation, checkpoint, export, summary) or a
    stage within init (nccl, model, tokenizer, dataset) begins or ends."""

    NAME: ClassVar[str] = "phase"
    name: str
    stage: str
    step: int
    time: float


@dataclass(frozen=True)
class Step:
    NAME: ClassVar[str] = "step"
    step: int
    max_steps: int
    loss: float
    loss_min: float
    loss_max: float
    grad_norm: float
    epoch: int = 1
    ppl: float = 0.0
    lr: float = 0.0
    tokens_per_s: float = 0.0
    samples_per_s: float = 0.0
    step_time_s: float = 0.0
    mfu: float = 0.0
    tflops_per_gpu: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float = 0.0  # to the end of training: the steps left and the pauses_s
    pauses_s: float = 0.0  # the evaluations and checkpoints still to come, in simulated seconds
    time: float = 0.0
    gpu_mem_mib: int = 0  # the fullest GPU, from the ranks' latest telemetry
    gpu_mem_total_mib: int = 0
    gpu_util: float = 0.0  # averages over every GPU
    gpu_temp_c: float = 0.0
    gpu_mem_used_mib: list[int] = field(default_factory=list)  # every GPU, in rank order
    # The gradients jumped past what an fp16 loss scale survives: a run in fp16
    # (DeepSpeed's, Megatron's loss scaler) skips this step and halves its scale.
    overflow: bool = False
    # Training ends after this step, before max_steps (--exit-after-time ran
    # out, or the job was asked to stop): the script logs it, as its last.
    stopped: bool = False


@dataclass(frozen=True)
class GpuSample:
    rank: int
    node: int
    local: int
    util: int
    temp_c: int
    power_w: int
    mem_used_mib: int
    mem_total_mib: int


@dataclass(frozen=True)
class GpuStatus:
    NAME: ClassVar[str] = "gpu_status"
    step: int
    gpus: list[GpuSample]
    time: float


@dataclass(frozen=True)
class OpStats:
    op: str
    count: int
    bytes: int
    avg_ms: float
    busbw_gbs: float


@dataclass(frozen=True)
class NcclStats:
    """Aggregates of the collectives the coordinator really ran since the
    previous report (simulated durations for the simulated tensor sizes)."""

    NAME: ClassVar[str] = "nccl_stats"
    step: int
    ops: list[OpStats]
    time: float


@dataclass(frozen=True)
class Validation:
    NAME: ClassVar[str] = "validation"
    step: int
    epoch: int
    val_loss: float
    val_ppl: float
    eval_time_s: float
    samples: int
    time: float


@dataclass(frozen=True)
class Checkpoint:
    NAME: ClassVar[str] = "checkpoint"
    step: int
    epoch: int
    path: str
    shards: int
    model_bytes: int
    optimizer_bytes: int
    seconds: float
    time: float
    # The steps of the older checkpoints this save rotates out (the HF Trainer's
    # save_total_limit), which the lines name and the writer deletes.
    deleted: tuple[int, ...] = ()


@dataclass(frozen=True)
class Export:
    NAME: ClassVar[str] = "export"
    path: str
    files: list[str]
    bytes: int
    seconds: float
    time: float


@dataclass(frozen=True)
class Summary:
    NAME: ClassVar[str] = "summary"
    model: str
    epochs: int
    steps: int
    final_loss: float
    final_ppl: float
    best_val_loss: float
    train_time_s: float
    tokens: int
    avg_tokens_per_s: float
    output: str
    time: float
    fine_tuned: bool = False  # trained from a base model's weights, not from scratch


@dataclass(frozen=True)
class WatchdogTimeout:
    """A collective did not complete in time; `waiting` ranks will abort."""

    NAME: ClassVar[str] = "watchdog_timeout"
    comm: str
    seq: int
    op: str
    numel: int
    timeout_ms: int
    elapsed_ms: int
    waiting: list[int]
    missing: list[int]
    time: float


@dataclass(frozen=True)
class Desync:
    """Ranks entered different collectives at the same point."""

    NAME: ClassVar[str] = "desync"
    comm: str
    detail: str
    ranks: list[int]
    time: float


@dataclass(frozen=True)
class Rejected:
    """A malformed or unauthorised message; counted, never fatal."""

    NAME: ClassVar[str] = "rejected"
    reason: str
    count: int
    peer: str
    time: float


@dataclass(frozen=True)
class Restart:
    """A failed worker group is restarted (--max-restarts), resuming from
    `resume_step` (0: from the start)."""

    NAME: ClassVar[str] = "restart"
    restart_count: int
    max_restarts: int
    resume_step: int
    time: float


@dataclass(frozen=True)
class OutputFailed:
    """A file fakerun must write (e.g. --metrics-file) could not be written."""

    NAME: ClassVar[str] = "output_failed"
    message: str


@dataclass(frozen=True)
class ShutdownRequested:
    NAME: ClassVar[str] = "shutdown"
    signal: int
    time: float


@dataclass(frozen=True)
class ClosingSignal:
    NAME: ClassVar[str] = "closing_signal"
    rank: int
    local_rank: int
    pid: int
    signal: str
    time: float


@dataclass(frozen=True)
class ForcedKill:
    NAME: ClassVar[str] = "forced_kill"
    rank: int
    pid: int
    time: float
    signal: int = 15  # the signal it did not die of


@dataclass(frozen=True)
class RankExited:
    NAME: ClassVar[str] = "rank_exited"
    rank: int
    local_rank: int
    node_rank: int
    pid: int
    exitcode: int


@dataclass(frozen=True)
class AttemptFailed:
    """An attempt's worker group failed and --max-restarts restarts it:
    torch elastic logs its first failure (`failed (exitcode: …)`) for every
    attempt; the ChildFailedError report (RunFailed) only for the last."""

    NAME: ClassVar[str] = "attempt_failed"
    binary: str
    root: Failure
    time: float


@dataclass(frozen=True)
class RunFailed:
    """torch elastic's ChildFailedError for this node's workers."""

    NAME: ClassVar[str] = "run_failed"
    entrypoint: str
    binary: str
    launcher_pid: int
    root: Failure
    others: list[Failure]
    time: float


@dataclass(frozen=True)
class RunFinished:
    NAME: ClassVar[str] = "run_finished"
    exit_code: int
    steps: int
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitingForNodes:
    """Node 0 is still waiting for other nodes to join; `commands` are what
    to run on each missing node."""

    NAME: ClassVar[str] = "waiting_for_nodes"
    missing: list[int]
    commands: list[str]
    time: float


@dataclass(frozen=True)
class NcclSocketClosed:
    """`rank`'s NCCL found its socket to `peer` (the host of a lost node's
    rank) closed: what it says before the rank's DistBackendError."""

    NAME: ClassVar[str] = "nccl_socket_closed"
    rank: int
    peer: str
    time: float


@dataclass(frozen=True)
class NodeLost:
    """Another node failed or went silent; this node's collectives with it
    fail from now on."""

    NAME: ClassVar[str] = "node_lost"
    node_rank: int
    host: str
    reason: str  # failed | silent | refused
    detail: str
    time: float
    reported_by: int = 0  # node 0's coordinator, or another node's agent that lost node 0


@dataclass(frozen=True)
class HpcCheckpoint:
    """Lightning's SLURM auto-requeue handler saved `hpc_ckpt_N.ckpt` in the
    default root dir (Slurm's SIGUSR1 before the time limit); training goes on."""

    NAME: ClassVar[str] = "hpc_checkpoint"
    step: int
    epoch: int
    seconds: float
    time: float


@dataclass(frozen=True)
class Requeued:
    """Then its global zero ran `scontrol requeue <job>`: that command's exit status."""

    NAME: ClassVar[str] = "requeued"
    step: int
    exit_code: int
    time: float


@dataclass(frozen=True)
class AgentError:
    """This agent cannot run its part of the job (e.g. its port is taken)."""

    NAME: ClassVar[str] = "agent_error"
    message: str


@dataclass(frozen=True)
class KernelMessage:
    """A line the kernel of `node_rank`'s host logs (an NVRM Xid, a NIC's
    link going down or up): `text` as dmesg shows it after its timestamp;
    the views add the syslog prefix and the uptime stamp."""

    NAME: ClassVar[str] = "kernel_message"
    node_rank: int
    text: str
    time: float


@dataclass(frozen=True)
class PortEvent:
    """The compute-fabric port beside GPU `gpu` (a local index) of node
    `node_rank` went down (`active` False) or came back: the HCA's async
    event (IBV_EVENT_PORT_ERR, IBV_EVENT_PORT_ACTIVE), which the NCCL of
    every rank of the node that opened the device hears."""

    NAME: ClassVar[str] = "port_event"
    node_rank: int
    gpu: int
    active: bool
    time: float


Event = (
    RunStarted | RunIdentity | Phase | RankStarted | RendezvousComplete | RendezvousTimeout | RankOutput
    | Collective | Step | GpuStatus | NcclStats | Validation | Checkpoint | HpcCheckpoint | Requeued | Export
    | Summary
    | WatchdogTimeout | Desync | Rejected | Restart | OutputFailed | ShutdownRequested | ClosingSignal
    | ForcedKill | RankExited | AttemptFailed | RunFailed | RunFinished | WaitingForNodes | NodeLost
    | NcclSocketClosed | AgentError | KernelMessage | PortEvent
)
