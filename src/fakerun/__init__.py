"""fakerun: a GPU-free stand-in for torchrun.

For test suites: `fakerun.run(nproc=4, max_steps=20, speed=0, scenario="rank-crash")`
returns a `Result` (exit code, events, captured output); see `fakerun.api`.
"""

from typing import TYPE_CHECKING

from fakerun.version import __version__

if TYPE_CHECKING:  # what a type checker sees of the names loaded on first use below
    from fakerun.api import FakerunFixture, FakerunTimeout, Result, RunOptions, run

__all__ = ["FakerunFixture", "FakerunTimeout", "Result", "RunOptions", "run", "__version__"]
_API = ("FakerunFixture", "FakerunTimeout", "Result", "RunOptions", "run")


def __getattr__(name: str) -> object:
    # Loaded on first use: the `fakerun` command starts without the API's imports
    # (a Ctrl+C as it starts meets its handler sooner).
    if name in _API:
        from fakerun import api

        return getattr(api, name)
    raise AttributeError(f"module 'fakerun' has no attribute {name!r}")
