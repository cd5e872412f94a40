"""Any value fakerun takes (hypothesis): the job runs (exit 0), or fakerun
refuses it with one `fakerun: error:` line and exit 2, within a bounded time,
with nothing left running and nothing written in the working directory but
what the value named. A tiny collective or rendezvous timeout may also trip,
as NCCL's watchdog or the rendezvous would: exit 1 with that message; so does
a job of several nodes whose other nodes never come, or whose node 0 cannot
listen on the master address it is given (as torchrun's TCPStore fails, in
one line) (issue 16).

The values: every numeric and time option; the path options (what a path can
be that is no place to write: a FIFO, a dangling symlink, a loop, /dev/null,
a name too long or not in UTF-8...); $FAKERUN_OPTS (bad quoting, unknown
options, a script, --nodes...); and the Slurm variables fakerun reads.

Every job is bounded: two steps at --speed 0, --exit-after-time 5s stops a
slow --speed drawn by the test, and a one-second rendezvous ends a job
waiting for other nodes. --max-steps, --nnodes, --node-rank and --nodes as
options have their own tests (a valid value there is a long run or a node
waiting for others, not a refusal); --loop is left out (it never ends).

Each job is an interpreter's start-up and a moment of work, one core's: the
four properties (cli_properties.py) run side by side, each @given in a
thread of its own with a runner of its own, started with the module's
first test; each test takes its own property's outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability import cli_properties as props
from tests.reliability.conftest import Started, started_together


@pytest.fixture(scope="module")
def properties(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    yield from started_together(request, tmp_path_factory, {
        "test_any_value_runs_or_is_refused_in_one_line": props.test_any_value_runs_or_is_refused_in_one_line,
        "test_any_path_runs_or_is_refused_in_one_line": props.test_any_path_runs_or_is_refused_in_one_line,
        "test_any_fakerun_opts_run_or_are_refused_in_one_line":
            props.test_any_fakerun_opts_run_or_are_refused_in_one_line,
        "test_any_slurm_variables_run_or_are_refused_in_one_line":
            props.test_any_slurm_variables_run_or_are_refused_in_one_line,
    })


def test_any_value_runs_or_is_refused_in_one_line(properties: dict[str, Started]) -> None:
    properties["test_any_value_runs_or_is_refused_in_one_line"].result()


def test_any_path_runs_or_is_refused_in_one_line(properties: dict[str, Started]) -> None:
    properties["test_any_path_runs_or_is_refused_in_one_line"].result()


def test_any_fakerun_opts_run_or_are_refused_in_one_line(properties: dict[str, Started]) -> None:
    properties["test_any_fakerun_opts_run_or_are_refused_in_one_line"].result()


def test_any_slurm_variables_run_or_are_refused_in_one_line(properties: dict[str, Started]) -> None:
    properties["test_any_slurm_variables_run_or_are_refused_in_one_line"].result()
