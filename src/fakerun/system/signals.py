"""Signals become data: handlers only record the signal, and a wakeup
socket makes the launcher's poll return at once so its main loop acts."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
from collections import deque
from typing import Any, NoReturn

# Each ends a job, as torch elastic's agent takes SIGTERM, SIGINT, SIGHUP and
# SIGQUIT alike (the ranks' TORCHELASTIC_SIGNALS_TO_HANDLE lists them).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
HANDLED = (*STOP_SIGNALS, signal.SIGCHLD)
PR_SET_DUMPABLE = 4  # prctl(2)
# Slurm's warning before a job's time limit (sbatch/srun --signal=USR1@90), which
# the launcher takes too (launcher/job.py says what becomes of it).
REQUEUE_SIGNAL = signal.SIGUSR1
AGENT_SIGNALS = (*HANDLED, REQUEUE_SIGNAL)
TAKE_WITHIN_S = 2.0  # a loop pass takes milliseconds: a stop signal not taken by then finds us stuck


class StopOverdue(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error of the code
    """A stop signal was not acted on in time: the process is stuck in a
    system call that a recorded signal does not end (PEP 475 retries it),
    e.g. a write to a reader that stopped reading. Raised into that call by
    SIGALRM, so that the process still ends (cleaning up on the way out).
    A BaseException: no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class KilledBy(BaseException):  # noqa: N818 - like SystemExit, not an error of the code
    """The process is to end as one that `signum` killed (its default
    action): raised through every `finally` (ranks reaped, run dir removed),
    then `die_by` at the top."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def die_by(signum: int) -> NoReturn:
    """End this process by `signum`'s default action, as its parent (a
    shell, srun) sees a process that signal killed; never with a core file,
    even where core_pattern pipes to a collector (which ignores RLIMIT_CORE):
    the crash is simulated."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if signum != signal.SIGKILL:  # SIGKILL has no handler to reset (and cannot have one)
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the signal is delivered before this returns
    os._exit(128 + signum)


class SignalInbox:
    def __init__(self, signals: tuple[signal.Signals, ...] = HANDLED,
                 finish_within: float | None = None) -> None:
        """`finish_within`: seconds a stop may take once the loop has taken
        its signal; with it, the first stop signal arms a deadline (SIGALRM):
        TAKE_WITHIN_S to be taken, then `finish_within` to be done, or
        StopOverdue."""
        self.finish_within = finish_within
        self.stop: int | None = None  # the first stop signal, once one came
        self._stop_taken = False
        self.received: deque[int] = deque()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._record)
        if finish_within is not None:
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._overdue)
        # A parent may have started us with them blocked, to hold one sent
        # before we could take it (the local cluster does): now we can.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def _record(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if signum in STOP_SIGNALS and self.stop is None and self.finish_within is not None:
            self.stop = signum
            signal.setitimer(signal.ITIMER_REAL, TAKE_WITHIN_S)

    def _overdue(self, _signum: int, _frame: Any) -> None:
        if self.stop is not None:
            raise StopOverdue(self.stop)

    def fileno(self) -> int:
        return self._reader.fileno()

    def take(self) -> list[int]:
        """Signals received since the last call, oldest first."""
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        taken = []
        while self.received:
            taken.append(self.received.popleft())
        if self.stop is not None and not self._stop_taken and self.stop in taken:
            self._stop_taken = True  # acted on: now the stop itself has its time
            signal.setitimer(signal.ITIMER_REAL, self.finish_within)
        return taken

    def close(self, last_words: bool = False) -> None:
        """Restore the previous handlers. `last_words`: the process's work is
        done and it is about to exit, so a Ctrl+C from here on ends it by
        SIGINT, quietly, instead of raising KeyboardInterrupt wherever the
        interpreter is (its finalization prints that traceback)."""
        if self.finish_within is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)  # before SIGALRM's handler goes
        for sig, handler in self._previous.items():
            quiet = last_words and sig == signal.SIGINT
            signal.signal(sig, signal.SIG_DFL if quiet else handler)
        signal.set_wakeup_fd(self._old_wakeup)
        self._reader.close()
        self._writer.close()
