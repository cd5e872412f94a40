"""NCCL_DEBUG and NCCL_DEBUG_SUBSYS in the job's environment decide what NCCL
prints, as NVIDIA/nccl's src/debug.cc does (the expected lines are
tests/unit/test_nccl.py's, each cited there at v2.21.5-1): one job per setting,
the demo's (`--nproc 2 --max-steps 2 --speed 0 --output plain`, seed 33: NCCL
2.21.5 on a pair of L40S)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_simulation import FIXED, clean_env
from tests.e2e.test_styles import rank_lines
from tests.unit.test_nccl import PREFIX, RANK1_221, fill

DEMO = (*FIXED, "--seed", "33", "--nproc", "2", "--max-steps", "2", "--output", "plain")  # the last --seed wins
NCCL_LINE = re.compile(r"^([\w-]+:\d+:\d+ \[\d\] NCCL |NCCL version )")


def nccl_run(runner, env: dict[str, str], *script: str) -> list[tuple[int, str]]:
    base = {k: v for k, v in clean_env().items() if not k.startswith("NCCL_")}
    job = runner.start(*DEMO, *script, env=base | env)
    assert job.wait() == 0, job.stderr[-2000:]
    return [(rank, text) for rank, text in rank_lines(job.stdout) if NCCL_LINE.match(text)]


def rank_messages(lines: list[tuple[int, str]], rank: int) -> list[str]:
    return [(m["text"] if (m := PREFIX.match(t)) else t) for r, t in lines if r == rank]


def test_without_nccl_debug_nccl_prints_nothing(runner, tmp_path):
    # A drop-in launch (a training script named) starts from torchrun's
    # environment, which sets no NCCL_DEBUG: NCCL_LOG_NONE.
    job = runner.start(*FIXED, "--output", "plain", "--nproc-per-node", "2", "--tee", "3", "train.py",
                       "--max_steps", "2", env={k: v for k, v in clean_env().items() if not k.startswith("NCCL_")},
                       cwd=tmp_path)
    assert job.wait() == 0, job.stderr[-2000:]
    assert [t for _, t in rank_lines(job.stdout + job.stderr) if NCCL_LINE.match(t)] == []


@pytest.mark.parametrize("level", ["VERSION", "WARN"])
def test_version_and_warn_print_rank_0s_version_line_alone(runner, level: str):
    assert nccl_run(runner, {"NCCL_DEBUG": level}) == [(0, "NCCL version 2.21.5+cuda12.4")]


def test_info_prints_the_whole_init(runner):
    lines = nccl_run(runner, {"NCCL_DEBUG": "INFO"})
    rank1 = rank_messages(lines, 1)
    assert rank1 == fill(RANK1_221, rank1)
    rank0 = rank_messages(lines, 0)
    assert rank0[4:6] == ["cudaDriverVersion 12040", "NCCL version 2.21.5+cuda12.4"]
    assert {r for r, _ in lines} == {0, 1} and lines != sorted(lines)  # both ranks, interleaved


def test_subsys_init_leaves_out_the_env_and_tuning_lines(runner):
    rank1 = rank_messages(nccl_run(runner, {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT"}), 1)
    assert rank1 == [x for x in fill(RANK1_221, rank1)
                     if "Plugin load returned" not in x and not x.startswith("TUNER/")]


@pytest.mark.parametrize("level", [None, "WARN"])
def test_a_lost_nodes_peers_warn_before_their_dist_backend_error(runner, level):
    # src/misc/socket.cc:50 at v2.21.5-1 (tests/unit/test_nccl.py): each surviving rank's NCCL says
    # why its collective failed, at NCCL_DEBUG=WARN and above, before torch raises DistBackendError.
    env = {k: v for k, v in clean_env().items() if not k.startswith("NCCL_")} | ({"NCCL_DEBUG": level} if level else {})
    job = runner.start(*FIXED, "--nodes", "2", "--nproc", "2", "--no-theatre", "--output", "plain", "--max-steps",
                       "20", "--scenario", "node-failure", "--fail-rank", "3", "--fail-step", "10", "--tee", "3",
                       "train.py", env=env)  # a drop-in: no demo NCCL_DEBUG
    assert job.wait() == 1, job.stderr[-2000:]
    warns = re.findall(r"^[\w-]+: \[default(\d)\]:[\w-]+:\d+:\d+ \[(\d)\] misc/socket\.cc:50 NCCL WARN "
                       r"socketProgress: Connection closed by remote peer [\w-]+<(\d+)>$", job.stdout, re.M)
    if level is None:
        assert warns == []
        return
    assert sorted((int(a), int(b)) for a, b, _ in warns) == [(0, 0), (1, 1)]  # node 0's ranks, on their GPUs
    for local, _, port in warns:  # the port its DistBackendError's "Last error:" names too
        assert f"[rank{local}]: socketProgress: Connection closed by remote peer" in job.stdout + job.stderr
        assert f"<{port}>" in job.stderr + job.stdout
