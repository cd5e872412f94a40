"""fakerun's pytest plugin, registered by installing fakerun (entry point
`pytest11`): the `fakerun` fixture.

    def test_crash_is_reported(fakerun):
        result = fakerun(nproc=2, max_steps=3, speed=0, scenario="rank-crash")
        assert result.exit_code == 1

`fakerun(...)` takes fakerun.run()'s arguments and returns its Result
(annotate the parameter with `fakerun.FakerunFixture`). When the test ends,
none of its jobs is running: one still running (a run() left waiting in a
thread) is stopped, with a warning; a process that outlived its job is
killed and fails the test.

This module is imported by every pytest session of an environment fakerun is
installed in: the API (and what it imports) loads only when a test asks
for the fixture."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fakerun.api.fixture import FakerunFixture


@pytest.fixture
def fakerun() -> Iterator[FakerunFixture]:
    from fakerun.api.fixture import FakerunFixture

    jobs = FakerunFixture()
    yield jobs
    teardown = jobs.close()
    if teardown.stopped:
        warnings.warn(f"fakerun: {teardown.stopped} job(s) still running at the end of the test were stopped",
                      pytest.PytestWarning, stacklevel=1)
    if teardown.killed:
        pytest.fail(f"fakerun: processes left after their job ended were killed: {teardown.killed}")
