"""fakerun: a GPU-free stand-in for torchrun.

For test suites: `fakerun.run(nproc=4, max_steps=20, speed=0, scenario="rank-crash")`
returns a `Result` (exit code, events, captured output); see `fakerun.api`.
"""

from fakerun.version import __version__

__all__ = ["FakerunTimeout", "Result", "run", "__version__"]


def __getattr__(name: str) -> object:
    # Loaded on first use: the `fakerun` command starts without the API's imports
    # (a Ctrl+C as it starts meets its handler sooner).
    if name in ("FakerunTimeout", "Result", "run"):
        from fakerun import api

        return getattr(api, name)
    raise AttributeError(f"module 'fakerun' has no attribute {name!r}")
