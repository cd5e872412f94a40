"""`python -m fakerun`, and the `fakerun` command.

Importing this module takes SIGINT: a Ctrl+C before the launcher's own
handlers are in place (or after they are gone) has no job to tear down, so
it ends the command at once with 130, no traceback. At once, not by raising:
an exception raised by a handler while an extension module imports can be
swallowed (1 Ctrl+C in 30 at ~50 ms was lost that way, and the job ran on).
Only the command imports this module.
"""

import _signal  # signal's C half: `signal` itself imports enum, which takes milliseconds
import os
import sys


def _interrupted(signum: int, frame: object) -> None:
    os._exit(128 + signum)


_signal.signal(_signal.SIGINT, _interrupted)  # first: importing the CLI takes a tenth of a second


def run() -> int:
    from fakerun.cli.main import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
