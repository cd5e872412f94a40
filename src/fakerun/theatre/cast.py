"""The cast: the processes the theatre starts in its panes, and how it
watches and ends them. They are the tmux server's children, not ours: exits
are seen through pidfds (or a slow poll), never waitpid."""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from dataclasses import dataclass

import psutil

from fakerun.system.signals import SignalInbox
from fakerun.theatre import layout as lay
from fakerun.theatre.stage import Pane, Stage

CLOSE_WAIT_S = 5.0


@dataclass
class Actor:
    """A process the show started in a pane."""

    role: str  # node | summary | dashboard | lifeline
    pane: Pane
    pane_id: str = ""
    proc: psutil.Process | None = None  # None: gone before we looked

    def alive(self) -> bool:
        return self.proc is not None and running(self.proc)

    def tree(self) -> list[psutil.Process]:
        if not self.alive():
            return []
        with contextlib.suppress(psutil.Error):
            return [self.proc, *self.proc.children(recursive=True)]
        return []

    def signal(self, sig: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.proc.send_signal(sig)


class Waiter:
    """Sleeps until a signal arrives, a watched process exits, or a timeout."""

    def __init__(self, inbox: SignalInbox) -> None:
        self.selector = selectors.DefaultSelector()
        self.selector.register(inbox.fileno(), selectors.EVENT_READ)

    def watch(self, proc: psutil.Process | None) -> None:
        if proc is None or not hasattr(os, "pidfd_open"):
            return  # the safety poll notices it
        with contextlib.suppress(OSError):
            self.selector.register(os.pidfd_open(proc.pid), selectors.EVENT_READ, proc.pid)

    def wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(max(0.0, timeout)):
            if key.data is not None:  # an exit: readable for good, so stop watching it
                self.selector.unregister(key.fd)
                os.close(key.fd)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            if key.data is not None:
                os.close(key.fd)
        self.selector.close()


def cast(stage: Stage, plan: lay.Plan, env: dict[str, str],
         dashboard_env: dict[str, str] | None = None) -> list[Actor]:
    """Every pane in creation order: the visible ones in plan order, then the
    nodes out of sight (one hidden window each). `dashboard_env`: the
    dashboard's alone (not the nodes', whose environment the ranks show)."""
    def actor(role: str, pane: Pane, own: dict[str, str] | None = None) -> Actor:
        return Actor(role, Pane(pane.title, pane.argv, {**pane.env, **env, **(own or {})}))

    actors = [Actor("lifeline", Pane("lifeline", []))]
    for slot in plan.slots:
        if slot == lay.SUMMARY:
            actors.append(actor("summary", stage.summary(plan.shown)))
        elif slot == lay.DASHBOARD:
            actors.append(actor("dashboard", stage.dashboard, dashboard_env))
        else:
            actors.append(actor("node", stage.nodes[slot]))
    return actors + [actor("node", pane) for pane in stage.nodes[plan.shown:]]


def kill(procs: list[psutil.Process], patience: float = 0.0) -> None:
    """SIGKILL whatever of `procs` still runs `patience` seconds from now."""
    left = wait_gone(procs, patience)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait_gone(left, CLOSE_WAIT_S)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after `timeout`. Not psutil.wait_procs:
    most of these are not our children, and a zombie whose new parent never
    reaps it (a container's init) would make it wait out the whole timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if running(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)  # teardown only: a few polls, never while the show runs


def running(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE
    return False
