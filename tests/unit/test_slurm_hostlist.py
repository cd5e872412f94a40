"""Slurm's node lists (issue 21): the first host of $SLURM_JOB_NODELIST is
node 0's, read as Slurm writes lists (slurm/src/common/hostlist.c; the
syntax of sbatch(1)'s "--nodelist": ranges with zero padding, suffixes,
several bracket groups, comma lists mixing ranges and names). A list Slurm
would not write is one `fakerun: error:` line and exit 2."""

from __future__ import annotations

import pytest

from fakerun.cli import main as cli
from fakerun.cli.main import build_parser, to_config
from fakerun.cli.slurm import first_host, hosts
from fakerun.errors import UsageError


@pytest.mark.parametrize("nodelist,expected", [
    ("gpu001", ["gpu001"]),
    ("node[01-04]-ib", ["node01-ib", "node02-ib", "node03-ib", "node04-ib"]),  # a suffix after the range
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),  # nested
    ("gpu[003-005,9],cpu1", ["gpu003", "gpu004", "gpu005", "gpu9", "cpu1"]),  # a list in the range, a name
    ("a,b[1-3]x,c", ["a", "b1x", "b2x", "b3x", "c"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),  # zero padding kept across the carry
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("dgx-[7,12-13].cluster", ["dgx-7.cluster", "dgx-12.cluster", "dgx-13.cluster"]),
    (" gpu[1-2] ", ["gpu1", "gpu2"]),  # as a shell's `export` may leave it
])
def test_a_slurm_host_list_expands_as_slurm_writes_it(nodelist, expected):
    assert hosts("SLURM_JOB_NODELIST", nodelist) == expected
    assert first_host("SLURM_JOB_NODELIST", nodelist) == expected[0]


@pytest.mark.parametrize("nodelist", ["gpu[", "gpu[1-", "[]", "gpu[3-1],cpu", "gpu[1-2", ",", "n[a-b]"])
def test_a_list_slurm_would_not_write_is_one_line(nodelist):
    with pytest.raises(UsageError) as caught:
        hosts("SLURM_JOB_NODELIST", nodelist)
    said = str(caught.value)
    assert said.startswith(f"$SLURM_JOB_NODELIST={nodelist!r}: ") and "\n" not in said


def parse(*argv: str):
    return build_parser().parse_args(["--nproc", "1", "--speed", "0", *argv])


@pytest.mark.parametrize("nodelist,master", [
    ("node[01-04]-ib", "node01-ib"),  # was read as node01
    ("rack[1-2]-node[01-04]", "rack1-node01"),  # was read as rack1
    ("gpu[07-08,11],cpu1", "gpu07"),
])
def test_node_0_is_the_first_host_of_the_job(nodelist, master):
    environ = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": nodelist}
    assert to_config(parse(), environ).master_addr == master


def test_the_list_is_not_read_when_the_master_is_named():
    """torchrun never reads it: a flag or $MASTER_ADDR decides alone."""
    bad = {"SLURM_JOB_NODELIST": "gpu["}
    assert to_config(parse("--master-addr", "10.0.0.7"), bad).master_addr == "10.0.0.7"
    assert to_config(parse(), bad | {"MASTER_ADDR": "head"}).master_addr == "head"
    with pytest.raises(UsageError, match="not a Slurm host list"):
        to_config(parse(), bad)


def test_a_bad_list_exits_2_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "rack[1-2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert cli.main(["--nproc", "1", "--speed", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "fakerun: error: $SLURM_JOB_NODELIST='rack[1-2': not a Slurm host list (unbalanced brackets)\n"
