"""A test suite's use of fakerun, which mypy --strict must accept
(tests/unit/test_typing.py checks it; nothing here runs)."""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import fakerun
from fakerun import FakerunFixture, Result, RunOptions


def crash(tmp: Path) -> Result:
    return fakerun.run("train.py", ["--lr", "3e-4"], nproc=4, max_steps=20, speed=0, seed=1,
                       scenario="rank-crash", fail_rank=2, fail_step=5, local_ranks_filter=[0, 1],
                       output_dir=tmp / "out", metrics_file=str(tmp / "m.jsonl"), resume=True, timeout=60)


def root_cause(result: Result) -> int:
    assert_type(result.exit_code, int)
    assert_type(result.ok, bool)
    failed = result.of("run_failed")[0]
    rank: int = failed["root"]["rank"]
    return rank


def everything_optional() -> None:
    options: RunOptions = {"nproc": "gpu", "tee": 3, "speed": 1e3, "start_time": "2026-01-30T14:23:15"}
    fakerun.run(**options)
    fakerun.run(nproc=None, max_steps=None, env={"NCCL_DEBUG": "INFO"}, timeout=None)


def timed_out() -> str:
    try:
        fakerun.run(scenario="hang", timeout=2.5)
    except fakerun.FakerunTimeout as exc:
        assert_type(exc.result, Result)
        return exc.result.stdout
    return ""


def test_with_the_fixture(fakerun: FakerunFixture) -> None:
    result = fakerun(nproc=2, max_steps=3, speed=0, exit_after_time="5m")
    assert_type(result, Result)


assert_type(fakerun.__version__, str)
