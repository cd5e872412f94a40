"""torchrun's own options, accepted with torchrun's meaning, so a job's
launch line runs unchanged; and $FAKERUN_OPTS for what the line cannot say."""

from __future__ import annotations

import io

import pytest

from fakerun.cli import main as cli
from fakerun.cli.main import build_parser, to_config
from fakerun.render.console import ConsoleSink
from fakerun.render.lines import STDERR, STDOUT, Line
from fakerun.render.logfiles import RankLogFiles
from fakerun.world.settings import Settings


def config(*argv: str, environ: dict[str, str] | None = None):
    return to_config(build_parser().parse_args(list(argv)), environ=environ or {})


def test_standalone_is_one_local_node_whatever_else_is_set():
    c = config("--standalone", "--nnodes", "4", "--master-addr", "10.0.0.1", environ={"MASTER_PORT": "1234"})
    assert (c.topology.nnodes, c.master_addr, c.master_port_given) == (1, "127.0.0.1", False)


def test_the_rendezvous_endpoint_names_node_0():
    c = config("--nnodes", "2", "--node-rank", "1", "--token", "t", "--rdzv_backend=c10d",
               "--rdzv-endpoint", "head-node:29400", "--rdzv-conf", "join_timeout=42,read_timeout=5")
    assert (c.master_addr, c.master_port, c.rdzv_timeout_s) == ("head-node", 29400, 42.0)


@pytest.mark.parametrize("text,nproc", [("gpu", 8), ("auto", 8), ("3", 3)])
def test_nproc_per_node_spellings(text, nproc):
    assert config("--nproc_per_node", text).topology.nproc_per_node == nproc


def test_an_elastic_range_starts_with_its_minimum():
    assert config("--nnodes", "1:4").topology.nnodes == 1


@pytest.mark.parametrize("argv", [["--nnodes", "3:2"], ["--nnodes", "x"], ["--tee", "10:3"], ["--tee", "4"],
                                  ["--redirects", "0:4"], ["--tee", "0:1,"],
                                  ["--nproc-per-node", "many"], ["--local-ranks-filter", "a"]])
def test_bad_torchrun_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_tee_redirects_and_the_local_ranks_filter_decide_the_console():
    out, err = io.StringIO(), io.StringIO()
    sink = ConsoleSink(out, err, 2, None, settings=Settings(tee=1, redirects=2, local_ranks=frozenset({1})))
    sink.write([Line("a", STDOUT, 1), Line("b", STDERR, 1), Line("c", STDOUT, 0), Line("launcher", STDERR)])
    assert (out.getvalue(), err.getvalue()) == ("[default1]:a\n", "launcher\n")
    bare = ConsoleSink(out := io.StringIO(), err, 2, None, settings=Settings(tee=0))
    bare.write([Line("a", STDOUT, 1)])
    assert out.getvalue() == "a\n"  # not teed, not redirected: the rank's own stream, as torchrun leaves it


def test_fakerun_opts_come_first_so_the_command_line_wins():
    args = cli.with_env_options(["--seed", "2", "train.py"], {"FAKERUN_OPTS": "--seed 1 --speed 0"},
                                 build_parser())
    ns = build_parser().parse_args(args)
    assert (ns.seed, ns.speed, ns.training_script) == (2, 0.0, "train.py")


@pytest.mark.parametrize("opts", ["--seed 7 train.py", "--speed 0 my_train.py --lr 1"])
def test_fakerun_opts_with_a_script_is_one_line_and_exit_2(opts, capsys):
    """A script there would make the whole command line its arguments."""
    with pytest.raises(SystemExit) as info:
        cli.with_env_options(["--nproc", "2"], {"FAKERUN_OPTS": opts}, build_parser())
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes options only" in err


def test_without_a_training_script_the_entrypoint_is_train_py():
    assert config().entrypoint == "train.py"


def test_the_console_prefix_is_the_role_or_the_template():
    out, err = io.StringIO(), io.StringIO()
    ConsoleSink(out, err, 2, None, settings=Settings(tee=3, role="rank")).write([Line("a", STDOUT, 3)])
    ConsoleSink(out, err, 2, None, settings=Settings(tee=3, prefix_template="${rank}/${local_rank} ")).write(
        [Line("b", STDOUT, 3)])
    assert out.getvalue() == "[rank1]:a\n3/1 b\n"


def test_the_log_files_get_the_redirected_and_teed_streams_unprefixed(tmp_path):
    paths = {0: (tmp_path / "out", tmp_path / "err")}
    logs = RankLogFiles(paths, settings=Settings(redirects=1, role="rank"))
    logs.write([Line("o", STDOUT, 0), Line("e", STDERR, 0), Line("launcher", STDERR)])
    logs.close()
    assert (paths[0][0].read_text(), paths[0][1].read_text()) == ("o\n", "")
    teed = RankLogFiles(paths, settings=Settings(tee=2, role="rank"))
    teed.write([Line("e2", STDERR, 0)])
    teed.close()
    assert paths[0][1].read_text() == "e2\n"  # TailLog prefixes the console's copy, never the file
