"""Attacks run as another local user, the way the security tests need them.

The tests run as root; an attack is a forked child that drops to `nobody`
before it does anything. Forked, not exec'd: the child keeps the modules
the test process imported (zmq among them), so it needs no read access to
the virtualenv, which may sit in a 0700 directory of root's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

OTHER_UID = OTHER_GID = 65534  # nobody / nogroup

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="attacks as another user need root to switch to uid 65534")


@dataclass
class Attacker:
    """A running attack: a child process of the test, as uid 65534."""

    pid: int
    result_fd: int

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def stop(self, timeout: float = 5.0) -> Any:
        """SIGTERM, then its result (what the attack returned, or None if it
        was still working); SIGKILL at the deadline."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        with os.fdopen(self.result_fd, "rb") as handle:
            data = handle.read()
        return json.loads(data) if data else None


def start_as_other_user(attack: Callable[..., Any], *args: Any) -> Attacker:
    """Fork; the child becomes uid/gid 65534, calls `attack(*args)` and
    sends its return value (JSON) back (SIGTERM ends it quietly)."""
    return _fork(attack, args, other_user=True)


def start_in_child(work: Callable[..., Any], *args: Any) -> Attacker:
    """The same, the child staying who we are: a test's own work done side
    by side with other tests' (a process, not a thread: the forks above are
    only safe in a process without other threads)."""
    return _fork(work, args, other_user=False)


def _fork(attack: Callable[..., Any], args: tuple[Any, ...], other_user: bool) -> Attacker:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker
        code = 0
        try:
            os.close(read_fd)
            if other_user:
                os.setgroups([])
                os.setgid(OTHER_GID)
                os.setuid(OTHER_UID)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            result = attack(*args)
            os.write(write_fd, json.dumps(result).encode())
        except BaseException:  # noqa: BLE001 - the child must never return into pytest
            traceback.print_exc(file=sys.stderr)
            code = 70
        finally:
            os._exit(code)
    os.close(write_fd)
    return Attacker(pid, read_fd)


def run_as_other_user(attack: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """`attack(*args)` as uid 65534, to its end; its return value."""
    return start_as_other_user(attack, *args).wait(timeout)
