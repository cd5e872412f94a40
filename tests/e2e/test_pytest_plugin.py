"""The `fakerun` fixture as a user's suite gets it: from the installed plugin
(entry point `pytest11`; an editable install registers it too), running a
job and leaving nothing running when the test ends."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

import fakerun.pytest_plugin
from fakerun import FakerunFixture
from fakerun.api.fixture import MARKER_ENV

pytest_plugins = ["pytester"]


def test_the_fixture_comes_from_the_installed_plugin(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.get_plugin("fakerun") is fakerun.pytest_plugin, \
        "the entry point is not registered: reinstall (pip install -e '.[test]')"


def test_the_fixture_runs_a_job_and_returns_its_result(fakerun: FakerunFixture) -> None:
    # local_ranks_filter=[0, 1] was the command line's text of a list, which it refused (exit 2)
    result = fakerun(nproc=2, max_steps=3, speed=0, seed=1, local_ranks_filter=[0, 1])
    assert result.ok and [s["step"] for s in result.of("step")] == [1, 2, 3]
    assert result.events[-1]["event"] == "run_finished" and not fakerun.processes()


def test_the_plugin_loads_no_api_until_a_test_asks_for_the_fixture() -> None:
    """Every pytest session of an environment with fakerun installed imports it."""
    code = "import sys, fakerun.pytest_plugin; print(sorted(m for m in sys.modules if m.startswith('fakerun')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['fakerun', 'fakerun.pytest_plugin', 'fakerun.version']"


def marked(marker: str) -> list[psutil.Process]:
    return FakerunFixture(marker=marker).processes()


# Two tests of a user's suite: one leaves a run() waiting in a thread, one a
# process of its job behind (as an orphaned rank would be). Each writes the
# marker its jobs carry, for the check that nothing of them is left.
LEFT_BEHIND = f"""
import os, subprocess, threading, time

def test_leaves_its_job_running(fakerun):
    threading.Thread(target=lambda: fakerun(nproc=2, max_steps=1000, speed=1), daemon=True).start()
    deadline = time.monotonic() + 30
    while len(fakerun.processes()) < 3:  # the launcher and its two ranks
        assert time.monotonic() < deadline
        time.sleep(0.02)
    open("running", "w").write(fakerun.marker)

def test_leaves_a_process_of_its_job(fakerun):
    subprocess.Popen(["sleep", "60"], env={{**os.environ, "{MARKER_ENV}": fakerun.marker}},
                     start_new_session=True)
    open("outlived", "w").write(fakerun.marker)
"""


def test_at_the_end_of_a_test_nothing_of_its_jobs_is_left(pytester: pytest.Pytester) -> None:
    """A job still running is stopped, with a warning; a process that
    outlived its job is killed, and fails the test."""
    pytester.makepyfile(LEFT_BEHIND)
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=2, errors=1, warnings=1)
    outcome.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaves_a_process_of_its_job*",
        "E * Failed: fakerun: processes left after their job ended were killed: ?'* sleep 60'?",  # ?: fnmatch's [
        "*PytestWarning: fakerun: 1 job(s) still running at the end of the test were stopped*"])
    for name in ("running", "outlived"):
        assert not marked((pytester.path / name).read_text())
