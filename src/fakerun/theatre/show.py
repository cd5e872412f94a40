"""The running show: build the panes on a private tmux server, attach the
user's terminal, supervise, and end it the same way whatever ended it.

Endings, all funnelled through `_finish` and `_close`:
- "signal": the theatre got SIGINT (Ctrl+C in any pane: the root-table C-c
  binding sends it), SIGTERM or SIGHUP. Node agents get SIGINT; 128+N.
- "quit": the dashboard exited (q) while every node agent still ran.
- "detached": the attach client went away (C-b d, or it died).
- "done": every node agent exited by itself. A failure holds the panes,
  readable, until a key closes the session.
Stopping is SIGINT, a grace, then SIGKILL of each survivor's process tree.
If the theatre itself is SIGKILLed, a lifeline pane (see Server.watch_script)
ends the server, and FAKERUN_LIFELINE lets each agent notice on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fakerun.errors import ExitCode
from fakerun.system import outcome
from fakerun.system.runtime import RuntimeDirError
from fakerun.system.signals import STOP_SIGNALS, SignalInbox
from fakerun.theatre import layout as lay
from fakerun.theatre.cast import CLOSE_WAIT_S, Actor, Waiter, cast, kill
from fakerun.theatre.server import Server
from fakerun.theatre.stage import Stage

GRACE_S = 10.0  # SIGINT to SIGKILL, as long as the agents' own shutdown may take
QUIT_SETTLE_S = 1.0  # a dashboard that exits as the job ends is not a quit
SAFETY_POLL_S = 1.0  # wakeups come from pidfds and signals; this is the backstop
STATUS_WAIT_S = 3.0  # tmux records an exit status moments after the exit
FORMAT = "#{pane_id}\t#{pane_pid}\t#{pid}"
NODES_WINDOW = "1"  # window 0 holds the lifeline pane
DONE_TABLE = "fakerun-done"  # the key table of the failure hold: any key closes
OPTIONS = [
    ["remain-on-exit", "on"],  # exit statuses stay readable, and so do failed panes
    ["exit-empty", "on"],
    ["status", "off"],
    ["pane-border-status", "top"],
    ["pane-border-format", " #{@fakerun_title} "],  # a user option: programs cannot retitle it
    ["default-terminal", "screen-256color"],
    ["history-limit", "10000"],
    ["escape-time", "10"],
]


@dataclass(frozen=True)
class Ending:
    kind: str  # signal | quit | detached | done
    signal: int = 0


@dataclass
class Show:
    stage: Stage
    plan: lay.Plan
    server: Server
    inbox: SignalInbox
    grace_s: float
    waiter: Waiter = field(init=False)
    actors: list[Actor] = field(default_factory=list)
    attach: subprocess.Popen | None = None  # `tmux attach`, in the foreground of the user's terminal
    tmux_proc: psutil.Process | None = None
    lifeline_fd: int = -1
    session: str = field(init=False)

    def __post_init__(self) -> None:
        self.waiter = Waiter(self.inbox)
        self.session = self.stage.name.replace(".", "_").replace(":", "_")  # tmux's own rule

    def role(self, name: str) -> list[Actor]:
        return [a for a in self.actors if a.role == name]

    @property
    def nodes(self) -> list[Actor]:
        return self.role("node")

    def stop_signals(self) -> list[int]:
        return [s for s in self.inbox.take() if s in STOP_SIGNALS]


def run(stage: Stage, environ: Mapping[str, str] | None = None, *, size: lay.Size | None = None,
        grace_s: float = GRACE_S) -> int:
    """Run the show on the user's terminal; return the job's exit code: 0 if
    every node agent exited 0, else the first non-zero one in node order, or
    128+N after signal N (130 for Ctrl+C)."""
    environ = dict(os.environ if environ is None else environ)
    layout = lay.plan(len(stage.nodes), size or terminal_size(), stage.summary is not None)
    try:
        server = Server.create(environ)
    except RuntimeDirError as exc:  # before any node starts, as a node's own launcher says it
        print(f"fakerun: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    inbox = SignalInbox()
    show = Show(stage, layout, server, inbox, grace_s)
    try:
        _open(show)
        return _finish(show, _supervise(show))
    finally:
        _close(show)
        show.waiter.close()
        inbox.close()


def terminal_size() -> lay.Size:
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        cols, rows = 80, 24
    return lay.Size(cols, rows)


def _open(show: Show) -> None:
    fifo = show.server.dir / "lifeline.fifo"
    os.mkfifo(fifo, 0o600)
    show.lifeline_fd = os.open(fifo, os.O_RDWR)  # never blocks; close-on-exec, so only we hold it
    env = {"FAKERUN_LIFELINE": str(os.getpid())}
    show.actors = cast(show.stage, show.plan, env, {outcome.OUTCOME_ENV: str(_outcome_path(show))})
    _start(show, fifo)
    _dress(show)
    show.attach = show.server.attach(show.session)
    for actor in show.nodes + show.role("dashboard"):
        show.waiter.watch(actor.proc)


def _start(show: Show, fifo: Path) -> None:
    """One tmux invocation creates the server, its options and every pane."""
    server, session, size = show.server, show.session, show.plan.size
    where = f"{session}:{NODES_WINDOW}"
    commands = [["new-session", "-d", "-s", session, "-x", str(size.cols), "-y", str(size.rows),
                 "-n", "lifeline", "-P", "-F", FORMAT, *server.watch_script(fifo)]]
    commands += [["set-option", "-g", *option] for option in OPTIONS]
    commands += [["bind-key", "-n", "C-c", "run-shell", "-b", f"kill -INT {os.getpid()}"],
                 ["bind-key", "-T", DONE_TABLE, "Any", "kill-session"]]
    visible = len(show.plan.slots)
    for i, actor in enumerate(show.actors[1:], start=1):
        command = server.launch_script(f"pane{i}", actor.pane)
        if i == 1:
            commands.append(["new-window", "-d", "-t", f"{session}:", "-n", "nodes", "-P", "-F", FORMAT,
                             *command])
        elif i <= visible:  # without -d: the new pane is active, so the next goes after it, in plan
            # order (select-layout fills cells in pane order); tiled, so the next split has room
            commands += [["split-window", "-t", where, "-P", "-F", FORMAT, *command],
                         ["select-layout", "-t", where, "tiled"]]
        else:
            commands.append(["new-window", "-d", "-t", f"{session}:", "-n", _literal(actor.pane.title),
                             "-P", "-F", FORMAT, *command])
    lines = server.cmd(*commands).splitlines()
    for actor, line in zip(show.actors, lines, strict=True):
        actor.pane_id, pid, tmux_pid = line.split("\t")
        actor.proc = _process(int(pid))
    show.tmux_proc = _process(int(tmux_pid))


def _dress(show: Show) -> None:
    """Titles, the planned layout, and the dashboard focused (q is its key)."""
    ids = {}
    slots = iter(show.plan.slots)
    for actor in show.actors[1:len(show.plan.slots) + 1]:
        ids[next(slots)] = int(actor.pane_id.lstrip("%"))
    commands = [["set-option", "-p", "-t", a.pane_id, "@fakerun_title", _literal(a.pane.title)]
                for a in show.actors]
    where = f"{show.session}:{NODES_WINDOW}"
    commands += [["select-layout", "-t", where, lay.layout_string(show.plan, ids)],
                 ["select-window", "-t", where],
                 ["select-pane", "-t", show.role("dashboard")[0].pane_id]]
    show.server.cmd(*commands)


def _literal(value: str) -> str:
    """A tmux argument kept whole: a trailing ';' would end the command."""
    return value[:-1] + "\\;" if value.endswith(";") else value


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _supervise(show: Show) -> Ending:
    quit_at, running_then = None, 0
    while True:
        if stops := show.stop_signals():
            return Ending("signal", stops[0])
        if show.attach.poll() is not None:
            return Ending("detached")
        running = sum(a.alive() for a in show.nodes)
        if not running:
            return Ending("done")
        now = time.monotonic()
        if quit_at is None and not show.role("dashboard")[0].alive():
            quit_at, running_then = now + QUIT_SETTLE_S, running
        if quit_at is not None and now >= quit_at:
            if running == running_then:
                return Ending("quit")
            quit_at = float("inf")  # nodes are finishing: the job ended, the dashboard saw it
        show.waiter.wait(SAFETY_POLL_S if quit_at is None else min(SAFETY_POLL_S, quit_at - now))


def _finish(show: Show, ending: Ending) -> int:
    if ending.kind != "done":
        _stop_nodes(show)
    codes = _exit_codes(show)
    if ending.kind == "signal":
        return ExitCode.of_signal(ending.signal)
    if ending.kind == "quit":  # `q`: the theatre's own way out, as its Ctrl+C (the agents exit 1)
        return ExitCode.SIGINT
    code = next((c for c in codes if c != ExitCode.OK), ExitCode.OK)
    if ending.kind == "done" and code != ExitCode.OK:
        _hold(show, code)
    return code


def _stop_nodes(show: Show) -> None:
    """SIGINT to every running agent, then, after the grace (or at a second
    Ctrl+C), SIGKILL to what is left of their process trees."""
    running = [a for a in show.nodes if a.alive()]
    trees = [p for a in running for p in a.tree()]  # before the agents go: orphans stay known
    for actor in running:
        actor.signal(signal.SIGINT)
    deadline = time.monotonic() + show.grace_s
    while any(a.alive() for a in running) and time.monotonic() < deadline:
        if show.stop_signals():
            break
        show.waiter.wait(min(SAFETY_POLL_S, deadline - time.monotonic()))
    kill([*trees, *(p for a in running for p in a.tree())])


def _exit_codes(show: Show) -> list[int]:
    """Each node agent's exit code, in node order, as tmux recorded it."""
    order = {a.pane_id: i for i, a in enumerate(show.nodes)}
    codes: dict[str, int] = {}
    deadline = time.monotonic() + STATUS_WAIT_S
    while len(codes) < len(order) and time.monotonic() < deadline:
        # run-shell first: its child's SIGCHLD makes tmux reap every zombie. tmux
        # (3.3a) can miss a pane's exit outright: libutempter sets SIGCHLD to
        # SIG_DFL while it waits for its helper, which runs as another pane closes.
        out = show.server.cmd(["run-shell", "true"], ["list-panes", "-s", "-t", show.session, "-F",
                              "#{pane_id}\t#{pane_dead_status}\t#{pane_dead_signal}"], check=False)
        for pane_id, status, sig in (line.split("\t") for line in out.splitlines()):
            if pane_id in order and (status or sig):
                codes[pane_id] = int(status) if status else 128 + int(sig)
        if len(codes) < len(order):
            time.sleep(0.05)  # tmux reaps its children on its own schedule
    return [codes.get(pane_id, ExitCode.FAILED) for pane_id in order]


def _hold(show: Show, code: int) -> None:
    """Keep the failed panes on screen until a key (any: DONE_TABLE) closes
    the session, which ends the attach client."""
    outcome.write(_outcome_path(show), code)  # a dashboard still waiting for the job shows its end
    target = ["-t", show.session]
    message = f"#[align=centre]job failed (exit {code}): press any key to close"
    show.server.cmd(["set-option", *target, "status-style", "bg=red,fg=white,bold"],
                    ["set-option", *target, "status-format[0]", message],
                    ["set-option", *target, "status", "on"],
                    ["set-option", *target, "key-table", DONE_TABLE], check=False)
    while show.attach.poll() is None and not show.stop_signals():
        show.waiter.wait(SAFETY_POLL_S)  # SIGCHLD wakes us when the client exits


def _outcome_path(show: Show) -> Path:
    return show.server.dir / "outcome"


def _close(show: Show) -> None:
    """Everything goes: panes' process trees, the server, the attach client
    (tmux restores the user's screen), the lifeline, the directory."""
    left = [p for a in show.actors for p in a.tree()]
    show.server.cmd(["kill-session", "-t", show.session], check=False)  # the client exits, "[exited]"
    show.server.kill()
    if show.attach is not None:
        _end_client(show.attach)
    if show.lifeline_fd >= 0:
        os.close(show.lifeline_fd)  # the lifeline pane's cat reads EOF and exits
        show.lifeline_fd = -1
    kill(left + ([show.tmux_proc] if show.tmux_proc else []), patience=CLOSE_WAIT_S)
    show.server.remove()


def _end_client(attach: subprocess.Popen) -> None:
    """Wait for the client; if it lingers, SIGTERM (tmux restores the terminal
    on it) before SIGKILL (which would leave the terminal raw)."""
    for stop in (None, attach.terminate, attach.kill):
        if stop:
            stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            attach.wait(CLOSE_WAIT_S)
            return


