"""Slurm: its node lists, read as Slurm writes them, and srun's tasks.

`SLURM_JOB_NODELIST` and `SLURM_STEP_NODELIST` are in Slurm's hostlist
syntax (`gpu[003-005,9],cpu1`, `node[01-04]-ib`, `rack[1-2]-node[01-04]`):
python-hostlist (the package `scontrol show hostnames` is usually replaced
by in Python launchers) expands it, with Slurm's zero padding, suffixes,
several bracket groups and comma lists mixing ranges and names.

srun starts fakerun one of two ways. One task a node (`srun
--ntasks-per-node=1 fakerun --nnodes $SLURM_NNODES ...`): fakerun is that
node's torchrun and starts its ranks. More tasks than nodes (`srun
--ntasks-per-node=8 fakerun train.py`): each task is one rank, as `srun
python train.py` runs a script with no torchrun at all; fakerun then stands
in for the script, and the tasks rendezvous with task 0's coordinator.
srun's task variables tell the two apart (`srun_task`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import hostlist

from fakerun.config.options import RunConfig
from fakerun.errors import UsageError
from fakerun.world.settings import Settings


def hosts(variable: str, nodelist: str) -> list[str]:
    """The hosts of `$variable` (its value `nodelist`), in Slurm's order,
    or a UsageError saying in one line what is wrong with it."""
    try:
        names = hostlist.expand_hostlist(nodelist.strip())
    except hostlist.BadHostlist as exc:
        raise UsageError(f"${variable}={nodelist!r}: not a Slurm host list ({exc})") from None
    if not names or any(not name.strip() for name in names):
        raise UsageError(f"${variable}={nodelist!r}: names no host")
    return names


def first_host(variable: str, nodelist: str) -> str:
    """The job's first host, where node 0 (SLURM_NODEID 0) runs: Slurm
    numbers a job's nodes in its node list's order."""
    return hosts(variable, nodelist)[0]


# What srun sets in every task it starts (src/common/env.c at slurm-24-11-7-1:
# env_array_for_step sets SLURM_STEP_ID, SLURM_STEP_NUM_TASKS,
# SLURM_STEP_NUM_NODES, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE;
# slurmstepd's setup_env SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID). A batch
# script has SLURM_JOB_ID but no SLURM_STEP_ID: only srun's tasks do.
STEP = ("SLURM_STEP_NUM_TASKS", "SLURM_STEP_NUM_NODES", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
        "SLURM_STEP_TASKS_PER_NODE")


@dataclass(frozen=True)
class SrunTask:
    """This process as one of the tasks srun started, one per rank
    (`srun --ntasks-per-node=8 python train.py`, no torchrun): its place
    in the step, as SLURM_PROCID/SLURM_LOCALID/SLURM_NODEID give it."""

    procid: int
    localid: int
    nodeid: int
    ntasks: int
    nnodes: int
    per_node: int


def srun_task(environ: Mapping[str, str]) -> SrunTask | None:
    """This process's task, when srun started more tasks than nodes (one a
    rank, as Lightning's SLURMEnvironment and the common `srun python
    train.py` templates take them); None under one task a node (srun
    starting fakerun as torchrun, which starts the ranks) or outside srun."""
    if not environ.get("SLURM_STEP_ID", "").strip():
        return None
    missing = [name for name in STEP if not environ.get(name, "").strip()]
    if missing:
        raise UsageError(f"srun's task without ${missing[0]}: not the environment srun sets")
    ntasks, nnodes = _count(environ, "SLURM_STEP_NUM_TASKS"), _count(environ, "SLURM_STEP_NUM_NODES")
    if ntasks <= nnodes:
        return None
    task = SrunTask(_count(environ, "SLURM_PROCID", 0), _count(environ, "SLURM_LOCALID", 0),
                    _count(environ, "SLURM_NODEID", 0), ntasks, nnodes, _per_node(environ, nnodes))
    _check_place(task)
    return task


def requeue_job(environ: Mapping[str, str]) -> str | None:
    """The job a Lightning script's SLURMEnvironment would requeue on
    SIGUSR1, when it is the cluster environment (Lightning-AI/pytorch-lightning
    at 2.4.0 to 2.6.5: fabric/plugins/environments/slurm.py detect(), which is
    _is_srun_used: SLURM_NTASKS set and the job not named `bash` or
    `interactive`; auto_requeue defaults to True): the array job's
    `<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>`, else SLURM_JOB_ID
    (trainer/connectors/signal_connector.py _slurm_sigusr_handler_fn)."""
    if "SLURM_NTASKS" not in environ or environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array = environ.get("SLURM_ARRAY_JOB_ID")
    job = (f"{array}_{environ.get('SLURM_ARRAY_TASK_ID', '')}" if array is not None
           else environ.get("SLURM_JOB_ID"))
    # The handler asserts re.match("[0-9_-]+", job_id): what Slurm's ids always are.
    return job if job and re.match("[0-9_-]+", job) else None


def _per_node(environ: Mapping[str, str], nnodes: int) -> int:
    """The step's tasks on each node, from srun's `8(x2)` or `8,8`: a rank
    per GPU, the same on every node (torchrun's --nproc-per-node)."""
    text = environ["SLURM_STEP_TASKS_PER_NODE"]
    try:
        counts = hostlist.parse_slurm_tasks_per_node(text.strip())
    except hostlist.BadHostlist as exc:
        raise UsageError(f"$SLURM_STEP_TASKS_PER_NODE={text!r}: {exc}") from None
    if len(counts) != nnodes or len(set(counts)) != 1 or counts[0] < 1:
        raise UsageError(f"$SLURM_STEP_TASKS_PER_NODE={text!r}: fakerun runs as many tasks on every "
                         f"node of the step's {nnodes} (srun --ntasks-per-node=N)")
    return counts[0]


def _check_place(task: SrunTask) -> None:
    """srun's default block distribution numbers a node's tasks together
    (SLURM_PROCID = node x tasks-per-node + SLURM_LOCALID), the layout
    torch's ranks take under torchrun too."""
    if task.ntasks != task.nnodes * task.per_node:
        raise UsageError(f"$SLURM_STEP_NUM_TASKS={task.ntasks}: not {task.nnodes} nodes x "
                         f"{task.per_node} tasks")
    if not (task.localid < task.per_node and task.nodeid < task.nnodes
            and task.procid == task.nodeid * task.per_node + task.localid):
        raise UsageError(f"srun task {task.procid} is local task {task.localid} of node {task.nodeid}: "
                         "fakerun takes srun's default block distribution (--distribution=block)")


def _count(environ: Mapping[str, str], name: str, least: int = 1) -> int:
    value = environ[name].strip()
    if not (value.isascii() and value.isdigit()) or int(value) < least:
        raise UsageError(f"${name}={environ[name]!r}: expected a number of at least {least}")
    return int(value)


def check_flags(nnodes: int | None, node_rank: int | None, task: SrunTask | None) -> None:
    """Under one task a rank, Slurm places each; torchrun's placement flags
    belong to one task a node, where fakerun starts the node's ranks."""
    if task is not None and (nnodes is not None or node_rank is not None):
        raise UsageError(f"srun started {task.per_node} tasks on each node, each one rank (SLURM_PROCID): "
                         "--nnodes and --node-rank are for one task a node (srun --ntasks-per-node=1)")


def nodelist(environ: Mapping[str, str]) -> tuple[str, str]:
    """The variable naming the nodes, and its value: the step's under srun
    (SLURM_NODEID counts within the step), else the job's."""
    for variable in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"):
        if environ.get(variable, "").strip():
            return variable, environ[variable]
    return "SLURM_JOB_NODELIST", ""


def node_names(variable: str, nodes: str, nnodes: int, strict: bool) -> tuple[str, ...]:
    """The nodes' names when the list names exactly the job's nodes (the
    ranks' hostnames, as NCCL's lines and the failure report show them);
    else none, and the run draws names. `strict`: srun set the list, so a
    list it cannot have written is an error; otherwise the list was not
    asked for (the master was named) and a bad one changes nothing."""
    if not nodes.strip():
        return ()
    try:
        names = hosts(variable, nodes)
    except UsageError:
        if strict:
            raise
        return ()
    return tuple(names) if len(names) == nnodes else ()


def task_settings(task: SrunTask | None, settings: Settings) -> Settings:
    """A task srun started is the script itself: no torchrun around it."""
    return settings if task is None else settings.without_torchrun()


def named_hosts(config: RunConfig, names: tuple[str, ...]) -> RunConfig:
    """The run on the nodes Slurm gave it: their names, not drawn ones."""
    if not names or config.identity is None:
        return config
    return replace(config, identity=replace(config.identity, hosts=names))
