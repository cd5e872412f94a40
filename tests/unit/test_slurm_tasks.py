"""srun's two ways of starting fakerun (issue 21). One task a node: fakerun
is that node's torchrun. More tasks than nodes (`srun --ntasks-per-node=8
fakerun train.py`, as `srun python train.py` runs a script): each task is
one rank, placed by SLURM_PROCID/SLURM_LOCALID/SLURM_NODEID, and every task
is an agent of the one job whose coordinator task 0 hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakerun.cli.main import build_parser, to_config
from fakerun.cli.slurm import srun_task
from fakerun.errors import UsageError
from fakerun.launcher import build
from fakerun.system.rundir import RunDir

from ..slurm_env import srun_task_env


def config(environ: dict[str, str], *argv: str):
    return to_config(build_parser().parse_args(["--speed", "0", *argv, "train.py"]), environ)


def task(procid: int, home: Path, nnodes: int = 2, per_node: int = 8, **extra: str) -> dict[str, str]:
    return srun_task_env("4242", nnodes, per_node, procid) | {"HOME": str(home)} | extra


def test_a_batch_script_and_one_task_a_node_are_not_a_task_a_rank(tmp_path):
    batch = {k: v for k, v in task(0, tmp_path).items() if not k.startswith("SLURM_STEP")}
    assert srun_task(batch) is None  # sbatch's shell: SLURM_NTASKS=16 but no step
    assert srun_task(task(1, tmp_path, per_node=1)) is None  # torchrun's way: fakerun starts the ranks


def test_each_task_is_the_rank_slurm_numbered(tmp_path):
    """Task 11 of 2 nodes x 8 tasks: local task 3 of node 1, global rank 11,
    GPU 3 of gpu02; its agent is the coordinator's 12th, over TCP."""
    c = config(task(11, tmp_path))
    assert (c.topology.nnodes, c.topology.nproc_per_node, c.topology.node_rank, c.task) == (2, 8, 1, 3)
    assert (c.agents.nnodes, c.agents.nproc_per_node, c.agents.node_rank) == (16, 1, 11)
    assert c.master_addr == "gpu01" and c.master_port == 29500 and c.run_id == "4242"
    assert c.identity.hosts == ("gpu01", "gpu02")  # Slurm's node names, not drawn ones
    assert not c.settings.torchrun and c.settings.tee == 0  # no torchrun around the script
    rundir = RunDir.create(c.run_id, tmp_path / "logs", "abc", ipc=False)
    try:
        specs = build.rank_specs(c, rundir, 0, "t", "tcp://127.0.0.1:29500")
    finally:
        rundir.remove()
    assert [(s.rank, s.local_rank, s.node_rank) for s in specs] == [(11, 3, 1)]
    assert "RANK" not in specs[0].env and "TORCHELASTIC_RUN_ID" not in specs[0].env  # srun sets none


def test_every_task_draws_the_same_run_and_token(tmp_path):
    configs = [config(task(r, tmp_path)) for r in (0, 5, 15)]
    assert len({(c.seed, c.token, c.digest(), c.identity.model.name) for c in configs}) == 1
    assert configs[0].token and [c.agents.node_rank for c in configs] == [0, 5, 15]


def test_flags_and_master_address_under_tasks(tmp_path):
    c = config(task(3, tmp_path, MASTER_ADDR="10.1.2.3", MASTER_PORT="12345"))
    assert (c.master_addr, c.master_port) == ("10.1.2.3", 12345)  # as a script's exports set them
    with pytest.raises(UsageError, match="--nnodes and --node-rank are for one task a node"):
        config(task(3, tmp_path), "--nnodes", "2")


@pytest.mark.parametrize("change,says", [
    ({"SLURM_STEP_TASKS_PER_NODE": "9,7"}, "as many tasks on every node"),
    ({"SLURM_PROCID": "8", "SLURM_NODEID": "0"}, "block distribution"),  # cyclic: task 8 on node 0
    ({"SLURM_LOCALID": "x"}, "$SLURM_LOCALID='x': expected a number"),
    ({"SLURM_STEP_TASKS_PER_NODE": "8(x"}, "$SLURM_STEP_TASKS_PER_NODE='8(x'"),
    ({"SLURM_STEP_NODELIST": "gpu[01-"}, "$SLURM_STEP_NODELIST='gpu[01-': not a Slurm host list"),
    ({"SLURM_PROCID": ""}, "without $SLURM_PROCID"),
])
def test_a_task_environment_srun_would_not_set_is_one_line(tmp_path, change, says):
    with pytest.raises(UsageError) as caught:
        config(task(0, tmp_path) | change)
    assert says in str(caught.value) and "\n" not in str(caught.value)
