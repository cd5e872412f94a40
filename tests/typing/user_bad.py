"""Mistakes mypy must find in a test suite's use of fakerun: each line
marked `# error` is one, and there are no others (tests/unit/test_typing.py)."""

from __future__ import annotations

import fakerun
from fakerun import FakerunFixture

fakerun.run(nprocs=2)  # error: no such option
fakerun.run(local_ranks_filter="0,1")  # error: local ranks are ints
fakerun.run(max_steps="5")  # error: a number, not text
fakerun.run(nproc="gpus")  # error: gpu, auto, cpu or a number
fakerun.run(output="plain")  # error: run() always reads JSONL
fakerun.run(speed=0, timeout="60")  # error: seconds, not text
code: str = fakerun.run().exit_code  # error: an int


def test_with_the_fixture(fakerun: FakerunFixture) -> None:
    fakerun(nproc=2, seed="7")  # error: the seed is an int
