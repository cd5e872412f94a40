"""torchrun's options read from PET_<DEST> (torch/distributed/argparse_util.py
env and check_env, pytorch/pytorch v2.3.1 to v2.13.0): the variable is the
option's default, a flag on the command line wins, fakerun's own options read
none. Table-driven over the parser's own actions, so an option added to the
parser later is covered by the same checks."""

from __future__ import annotations

import argparse

import pytest

from fakerun.cli.main import build_parser, to_config
from fakerun.cli.pet import read_environment, torchrun_options

# A value torchrun would take for each option that reads PET_ (a flag's is
# "1"), and a second one for the command line to win with.
SAMPLES: dict[str, tuple[str, str]] = {
    "nnodes": ("2", "3"), "nproc_per_node": ("2", "4"), "rdzv_backend": ("c10d", "static"),
    "rdzv_endpoint": ("head:29400", "other:29401"), "rdzv_id": ("job7", "job8"),
    "rdzv_conf": ("join_timeout=5", "join_timeout=6"), "max_restarts": ("3", "1"),
    "monitor_interval": ("0.5", "1"), "start_method": ("fork", "spawn"), "event_log_handler": ("null", "null"),
    "role": ("trainer", "worker"), "log_dir": ("logs", "other-logs"), "redirects": ("3", "1"), "tee": ("3", "2"),
    "local_ranks_filter": ("0,1", "1"), "duplicate_stdout_filters": ("apple,orange", "pear"),
    "duplicate_stderr_filters": ("apple", "pear"), "node_rank": ("1", "0"), "master_addr": ("10.0.0.1", "10.0.0.2"),
    "master_port": ("29501", "29502"), "local_addr": ("10.0.0.3", "10.0.0.4"),
    "signals_to_handle": ("SIGTERM,SIGUSR1", "SIGTERM"), "shutdown_timeout": ("30", "10"),
}
FLAGS = {dest for dest, option in torchrun_options().items() if option.action == "check_env"}


def parse(argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args([*read_environment(parser, environ), *argv])


def torchrun_actions() -> list[argparse.Action]:
    known = torchrun_options()
    return [a for a in build_parser()._actions if a.dest in known and a.option_strings]


def flag_of(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def test_every_torchrun_option_has_a_sample_value():
    assert set(torchrun_options()) == set(SAMPLES) | FLAGS
    assert {"nnodes", "nproc_per_node", "node_rank", "master_addr", "master_port", "standalone"} <= {
        a.dest for a in torchrun_actions()}


@pytest.mark.parametrize("action", torchrun_actions(), ids=lambda a: a.dest)
def test_each_torchrun_option_reads_its_pet_variable_and_the_flag_wins(action):
    variable = "PET_" + action.dest.upper()
    if action.dest in FLAGS:
        assert getattr(parse([], {variable: "1"}), action.dest) is True
        assert getattr(parse([], {variable: "0"}), action.dest) is False
        assert getattr(parse([flag_of(action)], {variable: "0"}), action.dest) is True
        return
    value, other = SAMPLES[action.dest]
    assert getattr(parse([], {variable: value}), action.dest) == getattr(parse([flag_of(action), value], {}),
                                                                          action.dest)
    assert getattr(parse([flag_of(action), other], {variable: value}), action.dest) == getattr(
        parse([flag_of(action), other], {}), action.dest)


def test_an_option_added_later_reads_its_variable_with_no_code_of_its_own():
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title == "torchrun options")
    if not any(a.dest == "shutdown_timeout" for a in parser._actions):
        group.add_argument("--shutdown-timeout", "--shutdown_timeout", dest="shutdown_timeout", type=int)
    assert parser.parse_args(read_environment(parser, {"PET_SHUTDOWN_TIMEOUT": "12"})).shutdown_timeout == 12


def test_fakerun_options_read_no_pet_variable():
    """torchrun has no variable for them (fakerun's are $FAKERUN_OPTS)."""
    known = torchrun_options()
    ours = [a for a in build_parser()._actions if a.option_strings and a.dest not in known and a.dest != "help"]
    assert {"nodes", "speed", "seed", "output_dir", "scenario"} <= {a.dest for a in ours}
    environ = {"PET_" + a.dest.upper(): "1" for a in ours}
    assert parse([], environ) == parse([], {})


@pytest.mark.parametrize("environ,says", [
    ({"PET_NNODES": "x"}, "$PET_NNODES: expected N or MIN:MAX, got 'x'"),
    ({"PET_MASTER_PORT": "http"}, "$PET_MASTER_PORT: invalid int value: 'http'"),
    ({"PET_STANDALONE": "yes"}, "$PET_STANDALONE='yes': expected a number"),
    # The training operator's elasticPolicy.standalone sets PET_STANDALONE to "" (elastic.go):
    # torchrun's int('') raises; here one line.
    ({"PET_STANDALONE": ""}, "$PET_STANDALONE='': expected a number"),
])
def test_a_bad_pet_value_is_one_usage_line_naming_the_variable(environ, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse([], environ)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


def test_an_empty_value_is_given_as_torchrun_takes_it():
    """os.environ.get(name, default) returns '' for a variable set empty:
    torchrun takes it as the value (not the default), as --log-dir ''."""
    assert parse([], {"PET_LOG_DIR": ""}).log_dir is None
    assert parse([], {"PET_ROLE": ""}).role == ""


def worker_pod(**more: str) -> dict[str, str]:
    """A PyTorchJob worker pod's environment (training-operator v1.9.0
    pkg/controller.v1/pytorch/envvar.go setPodEnv, master.go): 2 replicas,
    nprocPerNode "2", the first worker."""
    return {"PYTHONUNBUFFERED": "1", "MASTER_PORT": "23456", "PET_MASTER_PORT": "23456",
            "MASTER_ADDR": "job-master-0", "PET_MASTER_ADDR": "job-master-0", "WORLD_SIZE": "4", "RANK": "1",
            "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "2", "PET_NNODES": "2", "FAKERUN_TOKEN": "t"} | more


def config_of(argv: list[str], environ: dict[str, str]):
    return to_config(parse(argv, environ), environ)


def test_a_worker_pod_is_node_1_of_2_with_2_ranks():
    """Once a 1-node 8-rank job: WORLD_SIZE and RANK are the operator's
    (pods, not ranks) and torchrun reads neither (run.py reads no such variable)."""
    c = config_of(["--rdzv-id", "job"], worker_pod())
    t = c.topology
    assert (t.nnodes, t.node_rank, t.nproc_per_node, t.world_size) == (2, 1, 2, 4)
    assert (c.master_addr, c.master_port, c.master_port_given) == ("job-master-0", 23456, True)


def test_a_job_without_nproc_per_node_gets_the_operators_auto():
    """pytorch_defaults.go DefaultNprocPerNode = "auto": the node's GPUs, as torchrun's auto."""
    assert config_of(["--rdzv-id", "job"], worker_pod(PET_NPROC_PER_NODE="auto")).topology.nproc_per_node == 8


def test_the_command_line_wins_over_the_pods_variables():
    c = config_of(["--nnodes", "1", "--nproc-per-node", "3", "--node-rank", "0"], worker_pod())
    assert (c.topology.nnodes, c.topology.node_rank, c.topology.nproc_per_node) == (1, 0, 3)


def test_the_rendezvous_endpoint_wins_over_the_master_address():
    """torchrun's get_rdzv_endpoint: master_addr:master_port only when no
    endpoint is given (an elastic PyTorchJob with a Master has both)."""
    c = config_of(["--rdzv-id", "job"], worker_pod(PET_RDZV_ENDPOINT="job-worker-0:29400", PET_RDZV_BACKEND="c10d"))
    assert (c.master_addr, c.master_port) == ("job-worker-0", 29400)
    c = config_of(["--rdzv-id", "job", "--master-addr", "10.1.1.1", "--rdzv-endpoint", "10.2.2.2:1234"], {})
    assert (c.master_addr, c.master_port) == ("10.2.2.2", 1234)


def test_nodes_wins_over_a_pods_node_variables(monkeypatch):
    """`fakerun --nodes 2` in a pod: the agents are every node here, whatever
    PET_NNODES and PET_NODE_RANK say (defaults, under a flag)."""
    from fakerun.cli import main as cli
    from fakerun.launcher import cluster

    planned = []

    class Merged:
        def __init__(self, agents, *_):
            planned.extend(agents)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(cluster, "Merged", Merged)
    for name, value in worker_pod(PET_NNODES="3").items():
        monkeypatch.setenv(name, value)
    assert cli.main(["--nodes", "2", "--no-theatre", "--speed", "0"]) == 0
    assert [a.argv[a.argv.index("--node-rank") + 1] for a in planned] == ["0", "1"]
    assert all(a.argv[a.argv.index("--nnodes") + 1] == "2" for a in planned)
