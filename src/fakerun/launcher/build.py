"""What one attempt of a job is made of: the ranks' specs and environment,
the endpoints, this node's link to the coordinator, the run's clock and the
pids it shows. Pure construction; the job loop (job.py) runs them."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from fakerun import events as ev
from fakerun.checkpoint.reader import saved_steps
from fakerun.checkpoint.training_args import written
from fakerun.config.options import RunConfig
from fakerun.coordinator.core import Coordinator, JobSpec
from fakerun.coordinator.timeline import Timeline
from fakerun.failures import ERROR_FILE_ENV
from fakerun.protocol.messages import AgentHello
from fakerun.rank.process import RankSpec
from fakerun.system.rundir import RunDir
from fakerun.world import xid
from fakerun.world.clock import VirtualClock, local_now, parse_start
from fakerun.world.xid import Report


def worker_env(config: RunConfig, rank: int, local_rank: int, extra: dict[str, str]) -> dict[str, str]:
    """torchrun's worker environment (torch.distributed.elastic's
    LocalElasticAgent._start_workers)."""
    topo = config.topology
    env = {
        "RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": topo.world_size,
        "LOCAL_WORLD_SIZE": topo.nproc_per_node, "GROUP_RANK": topo.node_rank,
        "GROUP_WORLD_SIZE": topo.nnodes, "ROLE_RANK": rank, "ROLE_NAME": config.settings.role,
        "ROLE_WORLD_SIZE": topo.world_size, "MASTER_ADDR": config.master_addr,
        "MASTER_PORT": config.master_port, "TORCHELASTIC_RUN_ID": config.run_id,
        "TORCHELASTIC_RESTART_COUNT": 0, "TORCHELASTIC_MAX_RESTARTS": config.max_restarts,
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_SIGNALS_TO_HANDLE": config.launch.signals_to_handle,
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": 1,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if config.launch.virtual_local_rank:
        env |= virtual_local_rank(local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return {k: str(v) for k, v in env.items()} | config.settings.rank_env() | extra


def virtual_local_rank(local_rank: int, visible: str | None) -> dict[str, str | int]:
    """torch 2.13's --virtual-local-rank (local_elastic_agent.py
    _set_cuda_visible_devices): LOCAL_RANK 0, and the worker's own GPU as the
    only visible one, through the agent's CUDA_VISIBLE_DEVICES if it has one."""
    gpus = visible.split(",") if visible is not None else []
    gpu = gpus[local_rank].strip() if local_rank < len(gpus) else str(local_rank)
    return {"LOCAL_RANK": 0, "CUDA_VISIBLE_DEVICES": gpu}


def endpoints(config: RunConfig, rundir: RunDir) -> tuple[str, list[str]]:
    """Where this node's ranks connect, and (node 0 of several) where the
    other nodes connect: --master-addr, which is loopback unless told otherwise."""
    topo = config.agents  # under srun's one task per rank, every task but task 0 connects over TCP
    tcp = f"tcp://{_address(config.master_addr)}:{config.master_port}"
    if topo.node_rank > 0:
        return tcp, []
    # Always ipc:// in the user's private directory (RunDir.create refused
    # a path too long for one): loopback TCP would be open to every user.
    return rundir.endpoint(), [tcp] if topo.nnodes > 1 else []


def rank_specs(config: RunConfig, rundir: RunDir, attempt: int, token: str, endpoint: str) -> list[RankSpec]:
    topo, specs = config.topology, []
    for local in topo.local_ranks() if config.task is None else [config.task]:
        rank = topo.global_rank(local)
        # --log-dir /dev/null: torch's DefaultLogsSpecs.reify keeps no file, the error file's included
        # ("" in the worker's environment: @record writes none, the report shows <N/A>).
        s = config.settings
        none = s.no_log_files
        out, err = rundir.rank_logs(attempt, local, s.kept(local))
        env = worker_env(config, rank, local, {
            "TORCHELASTIC_RESTART_COUNT": str(attempt),
            ERROR_FILE_ENV: "" if none else str(rundir.error_file(attempt, local)),
            "FAKERUN_COORDINATOR": endpoint,
        }) if config.task is None else config.settings.rank_env()  # srun's task: its own environment
        specs.append(RankSpec(rank, local, topo.node_rank, endpoint, token, config.run_id, env,
                              os.getpid(), str(out), str(err), display_pid(config, 0, local)))
    return specs


def coordinator(config: RunConfig, clock: VirtualClock, token: str, deadline: float | None,
                monotonic: object, attempt: int = 0) -> Coordinator:
    """Node 0's coordinator; `deadline` (monotonic) is --exit-after-time's."""
    topo = config.agents
    resumed = config.resume_from.step if config.resume_from else 0
    out = config.output_dir
    args = written(config.identity.versions.transformers, config.script_args, config.asked.trainer)
    timeline = Timeline(config.identity, clock, deadline, monotonic, str(out) if out else None, resumed,
                        saved_steps(out) if out else (), config.style.name, args, config.fault)
    digest = config.digest() if topo.nnodes > 1 else ""
    job = JobSpec(config.run_id, token, topo.world_size, topo.nnodes, digest, config.node_timeout_s,
                  bounds=config.bounds, host=config.identity.host(0))
    return Coordinator(job, config.collective_timeout_s, clock, timeline,
                       report_wall=not config.deterministic, speed=config.speed, stall=stall(config),
                       xid=xid_report(config) if attempt == 0 else None)


def stall(config: RunConfig) -> tuple[int, int] | None:
    """(rank, step) of this attempt's rank that stops entering collectives
    (nccl-timeout), if its step is still ahead (rank/faults.py strikes it at
    the top of that step, before any of the step's collectives)."""
    fault, resumed = config.fault, config.resume_from
    if fault is None or fault.kind != "stall" or fault.step is None:
        return None
    if resumed is not None and fault.step <= resumed.step:
        return None
    return fault.rank, fault.step


def xid_report(config: RunConfig) -> Report | None:
    """The Xid the first attempt's rank dies of, if its step is still ahead
    (a restarted attempt's rank on a lost GPU finds it gone: the driver
    logged its Xid 79 once, as it fell off the bus)."""
    fault, resumed = config.fault, config.resume_from
    if fault is None or fault.kind != xid.KIND or fault.step is None:
        return None
    if resumed is not None and fault.step <= resumed.step:
        return None
    return Report(config.identity, fault.rank, int(fault.param("code")))


def agent_hello(config: RunConfig, token: str) -> AgentHello:
    """Another node's agent introducing itself to node 0's coordinator."""
    topo = config.agents
    return AgentHello(topo.node_rank, topo.nproc_per_node, os.getpid(),
                      config.identity.host(topo.global_rank(0)), config.run_id, token, config.digest())


def run_started(config: RunConfig, attempt: int, launcher_pid: int, now: float) -> ev.RunStarted:
    c, t = config, config.topology
    return ev.RunStarted(
        c.run_id, t.world_size, t.nnodes, t.nproc_per_node, t.node_rank, c.seed,
        c.entrypoint, list(c.script_args), c.steps, c.master_addr, c.master_port,
        launcher_pid, attempt, now, "OMP_NUM_THREADS" not in os.environ,
        str(c.output_dir) if c.output_dir else "", str(c.resume_from.path) if c.resume_from else "",
        c.resume_from.step if c.resume_from else 0, logger_version(c),
        c.requeue_job if c.requeues and c.requeue_job else "", str(c.tensorboard) if c.tensorboard else "")


def logger_version(config: RunConfig) -> int:
    """The version a Lightning script's CSVLogger takes at this launch
    (fabric/loggers/csv_logs.py _get_next_version: the next free number
    under <default_root_dir>/lightning_logs, the Trainer's default root being
    the cwd); the TensorBoardLogger's is Slurm's job id inside a job.
    Computed once, here: the writer makes that version_N and the
    screen's v_num says it. A restarted worker group's script is a new
    process, which takes the next one after its predecessor's."""
    if config.style.name != "lightning":
        return 0
    from fakerun.checkpoint import lightning  # only Lightning's launches need it
    # tensorboard installed (--tensorboard): TensorBoardLogger(version=SLURMEnvironment.job_id()).
    job = lightning.slurm_version(os.environ) if config.tensorboard is not None else None
    if job is not None:
        return job
    return lightning.next_version((config.output_dir or Path.cwd()) / lightning.LOGS)


def run_clock(config: RunConfig, wall: Callable[[], float] = time.monotonic) -> VirtualClock:
    """The run's clock, from the launch (or --start-time, which fixes what
    is printed; the pacing still starts at the launch)."""
    start, tz = parse_start(config.start_time) if config.start_time else local_now()
    if config.resume_from is not None and not config.start_time:
        start = max(start, config.resume_from.time)  # a resumed run continues after its checkpoint
    return VirtualClock(start, tz, config.speed, wall)


def stable_suffix(config: RunConfig) -> str:
    r = random.Random(f"{config.seed}:rundir")
    return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(8))


def display_pid(config: RunConfig, real: int, offset: int) -> int:
    """Under --start-time every displayed pid is derived from the seed, so
    two runs print the same bytes; otherwise pids are the real ones."""
    if not config.deterministic:
        return real
    return 4000 + config.seed % 50000 + 20 + offset


def _address(host: str) -> str:
    """zmq binds and connects to addresses: resolve a host name once."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):  # UnicodeError: a label over 63 characters fails IDNA encoding
        return host  # zmq reports the problem in its own words
