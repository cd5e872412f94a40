"""Bad input: one clear line on stderr and exit 2, before any process starts."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import FAKERUN


def fakerun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FAKERUN, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "needle"), [
    (["--nproc", "0"], "--nproc-per-node"),
    (["--nproc-per-node", "-3"], "--nproc-per-node"),
    (["--nproc", "abc"], "--nproc"),
    (["--nnodes", "0"], "--nnodes"),
    (["--nodes", "2", "--node-rank", "2"], "--node-rank"),
    (["--node-rank", "-1"], "--node-rank"),
    (["--master-port", "-1"], "--master-port"),  # 0 picks a free port, as torchrun's TCPStore binds port 0
    (["--nnodes", "2", "--master-port", "0"], "port 0"),  # ... on one node: the others cannot know it
    (["--master-port", "70000"], "--master-port"),
    (["--output", "html"], "--output"),
    (["--speed", "-1"], "--speed"),
    (["--speed", "nan"], "--speed"),
    (["--max-steps", "0"], "--max-steps"),
    (["--log-dir", "/proc/fakerun-cannot-be-here"], "--log-dir"),
    (["--scenario", "rank-crash", "--fail-rank", "99"], "--fail-rank"),
    (["--bogus"], "--bogus"),
    (["--nnodes", "2", "--node-rank", "1", "--master-port", "29999"], "token"),
    (["--nodes", "0"], "--nodes"),
    (["--nodes", "2", "--nnodes", "2"], "--nodes"),
    (["--nproc", "1", "--scenario", "nccl-timeout"], "nccl-timeout"),
    (["--scenario", "no-such-thing"], "unknown scenario"),
])
def test_bad_value_is_one_line_and_exit_2(args, needle):
    result = fakerun(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fakerun: error: ") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_log_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    result = fakerun("--log-dir", str(locked / "logs"))
    assert result.returncode == 2 and "--log-dir" in result.stderr


def test_log_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    result = fakerun("--log-dir", str(target / "sub"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert target.read_text() == "keep me"


def test_help_is_complete():
    result = fakerun("--help")
    assert result.returncode == 0
    for option in ("--nproc-per-node", "--nproc", "--nnodes", "--nodes", "--node-rank",
                   "--master-addr", "--master-port", "--rdzv-id", "--max-restarts", "--max-steps",
                   "--seed", "--speed", "--output", "--log-dir", "training_script", "exit codes"):
        assert option in result.stdout


def test_torchrun_underscore_spellings_are_accepted():
    parser_result = fakerun("--nproc_per_node", "0")
    assert parser_result.returncode == 2 and "--nproc-per-node" in parser_result.stderr
