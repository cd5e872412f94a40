"""Topology and run configuration."""

from __future__ import annotations

import json
import os

import pytest

from fakerun import events as ev
from fakerun import protocol
from fakerun.cli import build_parser, to_config
from fakerun.config import MAX_MULTINODE_WORLD, MAX_STEPS, MAX_WORLD, ConfigError, RunConfig, Topology


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
    with pytest.raises(ConfigError):
        Topology(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(nnodes=1, nproc_per_node=MAX_WORLD + 1), f"at most {MAX_WORLD}"),
    (dict(nnodes=2, nproc_per_node=MAX_MULTINODE_WORLD // 2 + 1), f"at most {MAX_MULTINODE_WORLD}"),
    (dict(nnodes=10**20, nproc_per_node=1), f"at most {MAX_MULTINODE_WORLD}"),
])
def test_sizes_no_job_has(kwargs, message):
    with pytest.raises(ConfigError, match=message):
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
    with pytest.raises(ConfigError, match=f"at most {MAX_STEPS}"):
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


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
         "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu1"}


def test_slurm_variables_place_every_node_of_one_job(tmp_path):
    from fakerun.cli import build_parser, to_config

    home = {"HOME": str(tmp_path)}  # where the nodes' shared secret is made
    configs = [to_config(build_parser().parse_args(["--nproc", "2"]), SLURM | home | {"SLURM_NODEID": n})
               for n in ("0", "1")]
    node0, node1 = configs
    assert node1.topology.node_rank == 1 and node1.topology.nnodes == 2
    assert (node1.master_addr, node1.master_port, node1.run_id) == ("gpu07", 29500, "4242")
    assert node0.seed == node1.seed and node0.token == node1.token and node0.token
    assert node0.digest() == node1.digest()


def test_flags_win_over_the_environment():
    from fakerun.cli import build_parser, to_config

    env = SLURM | {"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "1234", "FAKERUN_TOKEN": "env"}
    c = to_config(build_parser().parse_args(
        ["--nproc", "2", "--node-rank", "0", "--master-port", "4321", "--token", "flag"]), env)
    assert (c.topology.node_rank, c.master_addr, c.master_port, c.token) == (0, "10.0.0.9", 4321, "flag")


def parse(*argv: str):
    return build_parser().parse_args(["--nproc", "1", *argv])


@pytest.mark.parametrize("argv", [("--output-dir", ""), ("--metrics-file", ""), ("--token-file", ""),
                                  ("--resume", ""), ("--output-dir", "\udcff"), ("--metrics-file", "a/\udcfe")])
def test_an_empty_path_or_one_not_in_text_is_a_usage_error(argv, capsys):
    """'' was Path('.'), the working directory; bytes that are no UTF-8 were a
    UnicodeEncodeError once written into a log, JSON or a message."""
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("fakerun: error: argument")
    assert "expected a path, got ''" in err or "the name is not valid UTF-8" in err


@pytest.mark.parametrize("value", ["", "/dev/null"])
def test_an_empty_log_dir_or_dev_null_is_torchrun_s_none(value):
    assert parse("--log-dir", value).log_dir is None


def test_a_script_s_output_dir_not_in_text_is_refused():
    with pytest.raises(ConfigError, match=r"^--output-dir \\xff: the name is not valid UTF-8$"):
        to_config(parse("--speed", "0", "train.py", "--output_dir", "\udcff"), environ={})


LONG = "x" * 300  # past any file system's 255 bytes a name


@pytest.mark.parametrize("argv,says", [
    (("--log-dir", LONG), "--log-dir xxxxxxxx"),  # mkdir in the launcher: a traceback
    (("--log-dir", f"missing/{LONG}"), "(at most 255 bytes a name)"),  # the parent is still to make
    (("--output-dir", "abcdefgh/" * 400), "to leave room for the 512 fakerun makes under it"),
    (("--metrics-file", LONG), "File name too long"),  # is_dir raised
    (("--metrics-file", f"sub/{LONG}"), "sub is not a directory"),
    (("--resume", LONG), "--resume xxxxxxxx"),  # find's is_dir raised
])
def test_a_name_too_long_is_one_line(tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        to_config(parse("--speed", "0", *argv), environ={})
    message = str(caught.value)
    assert says in message and "\n" not in message and len(message) < 300, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make,says", [
    (lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),  # read_text hung for ever
    (lambda p: p.symlink_to("/dev/null"), "not a regular file (a character device)"),  # ran as an empty one
    (lambda p: p.symlink_to(p), "Too many levels of symbolic links"),  # 'unknown scenario'
    (lambda p: p.write_bytes(b"fault = '\\xff'\n" + b"\xff"), "codec can't decode"),
    (lambda p: p.write_text("#" * 70000), "70000 bytes, more than the 65536 expected"),
])
def test_a_scenario_file_that_is_none_is_one_line_at_once(tmp_path, make, says):
    import threading

    from fakerun import scenarios

    path = tmp_path / "odd.toml"
    make(path)
    said: list[str] = []

    def resolve() -> None:
        try:
            scenarios.resolve(str(path))
        except scenarios.ScenarioError as exc:
            said.append(str(exc))

    reader = threading.Thread(target=resolve, daemon=True)  # a hang fails here, not the whole run
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "resolve() blocked"
    assert len(said) == 1 and says in said[0] and "\n" not in said[0], said


def test_a_scenario_name_too_long_is_one_line():
    from fakerun import scenarios

    with pytest.raises(scenarios.ScenarioError, match=r"\.\.\.x+: File name too long$"):
        scenarios.resolve("x" * 300)


@pytest.mark.parametrize("argv,environ,says", [
    (("--rdzv-id", "../../escaped"), {}, "a run id names a directory"),  # made ../../escaped_* beside --log-dir
    (("--rdzv-id", ".."), {}, "a run id names a directory"),
    ((), {"SLURM_JOB_ID": "7" * 70000}, "70000 bytes, more than 246"),  # the hello undecodable: a 900 s wait
    (("--rdzv-id", "\udcff"), {}, "not valid UTF-8"),  # every rank failed to send its hello
    (("--master-addr", "h" * 254), {}, "254 bytes, more than 253"),
    ((), {"SLURM_JOB_NODELIST": "n" * 70000 + "[1-2]"}, "70001 bytes, more than 253"),
    (("--token", "\udcff"), {}, "the token (--token, $FAKERUN_TOKEN): not valid UTF-8"),  # a traceback
    ((), {"FAKERUN_TOKEN": "s3cr3t" * 1000}, "the token (--token, $FAKERUN_TOKEN): 6000 bytes, more than 4096"),
])
def test_what_every_rank_sends_in_its_hello_fits_a_name_and_the_wire(argv, environ, says):
    with pytest.raises(ConfigError) as caught:
        to_config(parse("--speed", "0", *argv), environ=environ)
    assert says in str(caught.value) and "s3cr3t" not in str(caught.value)
    to_config(parse("--speed", "0", "--rdzv-id", "r" * 246, "--master-addr", "h" * 253), environ={})


@pytest.mark.parametrize("argv,environ", [
    (("--nnodes", "2", "--rdzv-id", "\udcff"), {}),  # the default seed hashed it: a traceback
    ((), {"SLURM_JOB_ID": "\udcff", "SLURM_NNODES": "2"}),  # the token derived from it: a traceback
])
def test_a_job_id_not_in_text_is_refused_before_it_is_hashed(argv, environ):
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        to_config(parse("--speed", "0", *argv), environ=environ)
