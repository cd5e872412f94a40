"""The Python API for test suites: `fakerun.run(...)` (job.py), its typed
options (options.py), and the pytest fixture built on it
(fakerun.pytest_plugin)."""

from fakerun.api.fixture import FakerunFixture
from fakerun.api.job import DEFAULT_TIMEOUT_S, FakerunTimeout, Result, run
from fakerun.api.options import NOT_OPTIONS, RunOptions, to_argv

__all__ = ["DEFAULT_TIMEOUT_S", "NOT_OPTIONS", "FakerunFixture", "FakerunTimeout", "Result", "RunOptions",
           "run", "to_argv"]
