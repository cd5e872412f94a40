"""Signals become data: handlers only record the signal, and a wakeup
socket makes the launcher's poll return at once so its main loop acts."""

from __future__ import annotations

import signal
import socket
from collections import deque
from typing import Any

# Each ends a job, as torch elastic's agent takes SIGTERM, SIGINT, SIGHUP and
# SIGQUIT alike (the ranks' TORCHELASTIC_SIGNALS_TO_HANDLE lists them).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
HANDLED = (*STOP_SIGNALS, signal.SIGCHLD)


class SignalInbox:
    def __init__(self, signals: tuple[signal.Signals, ...] = HANDLED) -> None:
        self.received: deque[int] = deque()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._record)
        # A parent may have started us with them blocked, to hold one sent
        # before we could take it (the local cluster does): now we can.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def _record(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)

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
        return taken

    def close(self, last_words: bool = False) -> None:
        """Restore the previous handlers. `last_words`: the process's work is
        done and it is about to exit, so a Ctrl+C from here on ends it by
        SIGINT, quietly, instead of raising KeyboardInterrupt wherever the
        interpreter is (its finalization prints that traceback)."""
        for sig, handler in self._previous.items():
            quiet = last_words and sig == signal.SIGINT
            signal.signal(sig, signal.SIG_DFL if quiet else handler)
        signal.set_wakeup_fd(self._old_wakeup)
        self._reader.close()
        self._writer.close()
