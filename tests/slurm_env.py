"""The environment Slurm gives a task srun starts inside an sbatch job:
the batch job's variables, the step's and the task's own.

Which variables, and their formats, from Slurm itself (SchedMD/slurm at
tag slurm-24-11-7-1): doc/man/man1/srun.1 "OUTPUT ENVIRONMENT VARIABLES";
src/common/env.c env_array_for_batch_job (the job's), env_array_for_step
(SLURM_STEP_*, SLURM_STEPID, and SLURM_NNODES/SLURM_NTASKS/
SLURM_TASKS_PER_NODE rewritten for the step), setup_env (the task's:
SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_GTIDS, SLURM_TASK_PID);
src/plugins/gres/common/gres_common.c (SLURM_GPUS_ON_NODE). Task counts per
node are written as uint16_array_to_str does: `8(x2)`."""

from __future__ import annotations

import os


def hostlist_of(prefix: str, nnodes: int) -> str:
    """Slurm's compressed form of prefix01..prefixNN (`gpu[01-02]`)."""
    return f"{prefix}01" if nnodes == 1 else f"{prefix}[01-{nnodes:02d}]"


def srun_task_env(job_id: str, nnodes: int, per_node: int, procid: int, gpus_per_node: int = 8,
                  prefix: str = "gpu") -> dict[str, str]:
    """Task `procid` of `srun` in `sbatch --nodes=nnodes --ntasks-per-node=per_node
    --gpus-per-node=gpus_per_node`, with the default block distribution."""
    ntasks, node, local = nnodes * per_node, procid // per_node, procid % per_node
    nodes = hostlist_of(prefix, nnodes)
    tasks_per_node = f"{per_node}(x{nnodes})" if nnodes > 1 else str(per_node)
    return {
        # the job's (sbatch)
        "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_JOB_NAME": "train.sbatch",
        "SLURM_JOB_NODELIST": nodes, "SLURM_NODELIST": nodes, "SLURM_JOB_NUM_NODES": str(nnodes),
        "SLURM_NNODES": str(nnodes), "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_TASKS_PER_NODE": tasks_per_node,
        "SLURM_JOB_CPUS_PER_NODE": f"{16 * per_node}(x{nnodes})" if nnodes > 1 else str(16 * per_node),
        "SLURM_CPUS_ON_NODE": str(16 * per_node), "SLURM_GPUS_PER_NODE": str(gpus_per_node),
        "SLURM_JOB_PARTITION": "gpu", "SLURM_CLUSTER_NAME": "cluster", "SLURM_SUBMIT_HOST": "login01",
        "SLURM_SUBMIT_DIR": os.getcwd(), "SLURM_JOB_ACCOUNT": "ml", "SLURM_JOB_QOS": "normal",
        # the step's (srun)
        "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_STEP_NODELIST": nodes,
        "SLURM_STEP_NUM_NODES": str(nnodes), "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, "SLURM_STEP_LAUNCHER_PORT": "41233",
        "SLURM_SRUN_COMM_PORT": "41233", "SLURM_SRUN_COMM_HOST": "10.0.0.1",
        "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.1", "SLURM_DISTRIBUTION": "block", "SLURM_PRIO_PROCESS": "0",
        "SLURM_UMASK": "0022",
        # the task's (slurmstepd)
        "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node),
        "SLURM_GTIDS": ",".join(str(node * per_node + t) for t in range(per_node)),
        "SLURM_TASK_PID": str(40000 + procid), "SLURMD_NODENAME": f"{prefix}{node + 1:02d}",
        "SLURM_TOPOLOGY_ADDR": f"{prefix}{node + 1:02d}", "SLURM_TOPOLOGY_ADDR_PATTERN": "node",
        "SLURM_GPUS_ON_NODE": str(gpus_per_node),
    }
