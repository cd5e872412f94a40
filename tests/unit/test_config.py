"""Topology and run configuration."""

from __future__ import annotations

import json

import pytest

from fakerun import events as ev
from fakerun import protocol
from fakerun.cli.main import build_parser, to_config
from fakerun.config.options import MAX_STEPS, RunConfig
from fakerun.errors import UsageError
from fakerun.world.topology import MAX_MULTINODE_WORLD, MAX_WORLD, Topology


def test_topology_ranks():
    t = Topology(nnodes=2, nproc_per_node=8, node_rank=1)
    assert t.world_size == 16
    assert [t.global_rank(lr) for lr in t.local_ranks()] == list(range(8, 16))
    assert t.node_ranks() == range(8, 16) and t.node_ranks(0) == range(0, 8)
    assert (t.node_of(11), t.local_rank_of(11)) == (1, 3)


@pytest.mark.parametrize("kwargs", [
    dict(nnodes=1, nproc_per_node=0), dict(nnodes=0, nproc_per_node=1),
    dict(nnodes=2, nproc_per_node=1, node_rank=2), dict(nnodes=2, nproc_per_node=1, node_rank=-1),
])
def test_bad_topology(kwargs):
    with pytest.raises(UsageError):
        Topology(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(nnodes=1, nproc_per_node=MAX_WORLD + 1), f"at most {MAX_WORLD}"),
    (dict(nnodes=2, nproc_per_node=MAX_MULTINODE_WORLD // 2 + 1), f"at most {MAX_MULTINODE_WORLD}"),
    (dict(nnodes=10**20, nproc_per_node=1), f"at most {MAX_MULTINODE_WORLD}"),
])
def test_sizes_no_job_has(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Topology(**kwargs)
    Topology(1, MAX_WORLD)
    Topology(2, MAX_MULTINODE_WORLD // 2)


def test_the_largest_multinode_world_fits_the_wire():
    """Why MAX_MULTINODE_WORLD: node 0 forwards each gpu_status, every GPU
    in it, to the other agents as one string; at the bound (with the widest
    figures) it still decodes, a little past it it does not."""
    def forwarded(world: int) -> bytes:
        gpus = [ev.GpuSample(r, r // 8, r % 8, 100, 100, 1000, 999_999, 999_999) for r in range(world)]
        item = json.dumps(ev.to_dict(ev.GpuStatus(999_999, gpus, 1e10)), separators=(",", ":"))
        return protocol.encode(protocol.Events([item]))

    protocol.decode(forwarded(MAX_MULTINODE_WORLD))
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(forwarded(MAX_MULTINODE_WORLD * 9 // 8))

def test_steps_no_run_takes():
    with pytest.raises(UsageError, match=f"at most {MAX_STEPS}"):
        RunConfig(Topology(1, 1), max_steps=MAX_STEPS + 1)


def config(*argv: str) -> RunConfig:
    return to_config(build_parser().parse_args(list(argv)))


def test_run_id_follows_torchrun():
    assert config("--rdzv-id", "job42").run_id == "job42"
    assert config("--master-port", "29500").run_id == "none"
    uuid_like = config("--seed", "5").run_id
    assert len(uuid_like) == 36 and uuid_like[14] == "4"
    assert config("--seed", "5").run_id == uuid_like  # drawn from the seed


def test_script_and_its_arguments_are_recorded():
    c = config("--nproc", "2", "pretrain.py", "--lr", "3e-4", "--nproc", "9")
    assert c.entrypoint == "pretrain.py" and c.script_args == ("--lr", "3e-4", "--nproc", "9")
    assert c.topology.nproc_per_node == 2
    assert config().entrypoint == "train.py"


def test_defaults():
    c = config()
    assert (c.topology.nproc_per_node, c.topology.nnodes, c.master_addr) == (8, 1, "127.0.0.1")
    assert 1 <= c.master_port <= 65535 and c.output == "auto" and c.speed == 1.0


def test_the_shutdown_grace_is_5_s_unless_a_test_sets_it():
    """--shutdown-grace is hidden: a test's, for a rank deaf to SIGTERM."""
    assert config().shutdown_grace_s == 5.0
    assert config("--shutdown-grace", "1").shutdown_grace_s == 1.0
    assert "--shutdown-grace" not in build_parser().format_help()


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
         "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu1"}


def test_slurm_variables_place_every_node_of_one_job(tmp_path):
    from fakerun.cli.main import build_parser, to_config

    home = {"HOME": str(tmp_path)}  # where the nodes' shared secret is made
    configs = [to_config(build_parser().parse_args(["--nproc", "2"]), SLURM | home | {"SLURM_NODEID": n})
               for n in ("0", "1")]
    node0, node1 = configs
    assert node1.topology.node_rank == 1 and node1.topology.nnodes == 2
    assert (node1.master_addr, node1.master_port, node1.run_id) == ("gpu07", 29500, "4242")
    assert node0.seed == node1.seed and node0.token == node1.token and node0.token
    assert node0.digest() == node1.digest()


def test_flags_win_over_the_environment():
    from fakerun.cli.main import build_parser, to_config

    env = SLURM | {"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "1234", "FAKERUN_TOKEN": "env"}
    c = to_config(build_parser().parse_args(
        ["--nproc", "2", "--node-rank", "0", "--master-port", "4321", "--token", "flag"]), env)
    assert (c.topology.node_rank, c.master_addr, c.master_port, c.token) == (0, "10.0.0.9", 4321, "flag")


def test_only_node_0_checks_the_metrics_file(tmp_path):
    """Node 0 alone writes it; another node's host need not even have its directory."""
    path = str(tmp_path / "nowhere" / "m.jsonl")
    assert config("--nnodes", "2", "--node-rank", "1", "--token", "t", "--metrics-file", path).metrics_file
    with pytest.raises(UsageError, match="--metrics-file"):
        config("--nnodes", "2", "--metrics-file", path)
