"""fakerun: a GPU-free stand-in for torchrun.

For test suites: `fakerun.run(nproc=4, max_steps=20, speed=0, scenario="rank-crash")`
returns a `Result` (exit code, events, captured output); see `fakerun.api`.
"""

__version__ = "0.1.0"

from .api import FakerunTimeout, Result, run  # noqa: E402

__all__ = ["FakerunTimeout", "Result", "run", "__version__"]
