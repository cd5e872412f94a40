"""`python -m fakerun`, and the `fakerun` command."""

import signal
import sys
from typing import NoReturn


def _interrupted(signum: int, frame: object) -> NoReturn:
    # Ctrl+C before the launcher's own handlers are in place (or after they
    # are gone): nothing of a job to tear down yet, so no traceback, just 130.
    raise SystemExit(128 + signum)


def run() -> int:
    signal.signal(signal.SIGINT, _interrupted)
    from .cli import main  # after the handler: importing takes a tenth of a second

    return main()


if __name__ == "__main__":
    sys.exit(run())
