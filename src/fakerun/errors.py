"""What fakerun's processes exit with, and the errors it raises on purpose.

Exit codes follow the tools fakerun stands in for: torchrun exits 1 when a
worker failed (torch.distributed.elastic's ChildFailedError) and when a stop
signal ended it (its SignalException goes uncaught), argparse exits 2 on a
usage error, and a bug of our own is sysexits.h's EX_SOFTWARE. fakerun's own
interfaces (--loop, the theatre, `fakerun smi`, a closed stdout) exit as a
shell's program a signal ended, 128 + its number."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the job failed (or, for `fakerun smi`, there is no job)
    USAGE = 2  # one `fakerun: error:` line said why
    INTERNAL = 70  # EX_SOFTWARE: a bug in fakerun itself, not a simulated fault
    SIGINT = 130  # 128 + SIGINT: stopped by Ctrl+C
    PIPE = 141  # 128 + SIGPIPE: the reader went away; we shut down quietly

    @staticmethod
    def of_signal(signum: int) -> int:
        """The shell's code for a process a signal ended."""
        return 128 + signum


class FakerunError(Exception):
    """An error fakerun raises on purpose; its message is one line."""


class UsageError(FakerunError, ValueError):
    """What the user asked for cannot run: the CLI prints `fakerun: error:`
    and the message, and exits ExitCode.USAGE."""
