"""`--nodes M` on one machine: M agents, one per simulated node, each an
ordinary `fakerun --nnodes M --node-rank K` process talking TCP to node 0.

On a terminal with tmux they play in the theatre (one pane per node and an
nvidia-smi dashboard); otherwise their output is merged into one stream,
each line prefixed with its node's host (pdsh-style), or, for JSONL, each
object given a "node" field and said once: the job's events by node 0, not
again by the agents it relays them to.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, TextIO

from fakerun import events as ev
from fakerun import theatre
from fakerun.config.options import RunConfig, free_port
from fakerun.errors import ExitCode
from fakerun.system.signals import STOP_SIGNALS, SignalInbox
from fakerun.system.streams import silence

KILL_AFTER_S = 20.0  # after a stop signal: the agents' own grace, then this much more
LOCAL_FLAGS = ("--no-theatre", "--no_theatre")
# Options with a value the agents must not get: --nodes is the local cluster's
# own; the token reaches them in their environment, out of sight of `ps`.
# --jokes: the cluster's own decision goes instead.
# The local cluster places node 0 itself (127.0.0.1, the port chosen in plan()): an endpoint
# given would name node 0 over that (torchrun's get_rdzv_endpoint); plan() has read its port.
WITHHELD_OPTIONS = ("--nodes", "--token", "--token-file", "--jokes", "--rdzv-endpoint", "--rdzv_endpoint")


@dataclass(frozen=True)
class Agent:
    node: int
    host: str
    argv: list[str]
    env: dict[str, str]


def plan(argv: list[str], config: RunConfig, nodes: int, lifeline: int) -> list[Agent]:
    """The agents of a local cluster: the user's own options plus where each stands."""
    port = config.master_port if config.master_port_given else free_port()
    # $FAKERUN_OPTS is already in `argv`, token stripped: read again, its --token would beat FAKERUN_TOKEN.
    env = {"FAKERUN_TOKEN": config.token, "FAKERUN_LIFELINE": str(lifeline), "FAKERUN_OPTS": ""}
    own = _without_local_flags(argv, config.script_args)
    agents = []
    for node in range(nodes):
        # An endpoint, not --master-addr/--master-port: it wins over theirs and $PET_RDZV_ENDPOINT.
        where = ["--nnodes", str(nodes), "--node-rank", str(node), "--rdzv-endpoint", f"127.0.0.1:{port}",
                 "--rdzv-id", config.run_id, "--seed", str(config.seed),
                 "--jokes", repr(config.jokes)]
        agents.append(Agent(node, config.identity.hosts[node],
                            [sys.executable, "-m", "fakerun", *where, *own], env))
    return agents


def stage(agents: list[Agent], run_id: str, tool: str = "nvidia-smi") -> theatre.Stage:
    """The theatre's panes: each agent under its host name, and the whole
    cluster's GPUs in nvidia-smi's layout (rocm-smi's on AMD GPUs: `tool`
    names the pane), from before the job starts until q after it ends."""
    smi = [sys.executable, "-m", "fakerun", "smi", "--job", run_id, "--wait", "--hold"]
    return theatre.Stage(
        nodes=[theatre.Pane(a.host, a.argv, a.env) for a in agents],
        dashboard=theatre.Pane(tool, smi),
        summary=lambda k: theatre.Pane(" .. ".join(dict.fromkeys([agents[k].host, agents[-1].host]))
                                       + " (summary)",
                                       [*smi, "--compact", "--nodes-from", str(k)]),
        name=f"fakerun-{run_id}")


def _without_local_flags(argv: list[str], script_args: tuple[str, ...]) -> list[str]:
    """The user's argv minus what only the local cluster understands and
    the token (the training script's own arguments, at the end, are left as
    they are)."""
    head, tail = argv[:len(argv) - len(script_args)], argv[len(argv) - len(script_args):]
    out, skip = [], False
    for arg in head:
        name, joined, _ = arg.partition("=")
        if skip:
            skip = False
        elif name in WITHHELD_OPTIONS:
            skip = not joined  # `--token X`: X goes too; `--token=X` is one word
        elif name not in LOCAL_FLAGS:
            out.append(arg)
    return [*out, *tail]


class Merged:
    """Every agent as a child process; one stream of their lines."""

    def __init__(self, agents: list[Agent], stdout: TextIO, stderr: TextIO, jsonl: bool) -> None:
        self.agents = agents
        self.out = {"stdout": stdout, "stderr": stderr}
        self.jsonl = jsonl
        self.procs: list[subprocess.Popen[bytes]] = []
        self.partial: dict[tuple[int, str], bytes] = {}
        self.reader_gone = False  # our output was closed: the agents stop, their lines are dropped

    def run(self) -> int:
        # SIGCHLD too: an agent's exit wakes the loop (its pipes may close just before it exits).
        inbox = SignalInbox((*STOP_SIGNALS, signal.SIGCHLD))
        sel = selectors.DefaultSelector()
        try:
            self._start(sel)
            sel.register(inbox.fileno(), selectors.EVENT_READ, None)
            return self._loop(sel, inbox)
        finally:
            self._kill_all()
            inbox.close(last_words=True)
            sel.close()

    def _start(self, sel: selectors.BaseSelector) -> None:
        for agent in self.agents:
            # Own sessions: a terminal's Ctrl+C reaches us alone, and we pass it on once.
            # Stop signals blocked: one passed on while an agent still imports waits until
            # its handlers are in place (its SignalInbox unblocks them), where it would
            # have been a KeyboardInterrupt traceback.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                proc = subprocess.Popen(agent.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=os.environ | agent.env,
                                        start_new_session=True)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self.procs.append(proc)
            sel.register(proc.stdout, selectors.EVENT_READ, (agent, "stdout"))
            sel.register(proc.stderr, selectors.EVENT_READ, (agent, "stderr"))

    def _loop(self, sel: selectors.BaseSelector, inbox: SignalInbox) -> int:
        stopped: int | None = None
        kill_at: float | None = None
        open_pipes = 2 * len(self.procs)
        while open_pipes or any(p.poll() is None for p in self.procs):
            for key, _ in sel.select(timeout=1.0):
                if key.data is None:
                    for signum in (s for s in inbox.take() if s != signal.SIGCHLD):
                        stopped = stopped or signum
                        kill_at = kill_at or time.monotonic() + KILL_AFTER_S
                        self._signal_all(signum)
                elif not self._pump(key.fileobj, *key.data):
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
            if kill_at is not None and time.monotonic() >= kill_at:
                self._kill_all()
        codes = [p.wait() for p in self.procs]
        # A stop signal reached every agent: each exits as its torchrun does
        # (1; 128+N under --loop), and we with them.
        if self.reader_gone and not stopped:
            return ExitCode.PIPE
        # An agent killed by a signal (negative) failed the job: 1, as its ranks' failures do.
        return next((c if c > 0 else ExitCode.FAILED for c in codes if c != 0), 0)

    def _pump(self, pipe: IO[bytes], agent: Agent, stream: str) -> bool:
        chunk = os.read(pipe.fileno(), 65536)
        key = (agent.node, stream)
        data = self.partial.pop(key, b"") + chunk
        *lines, rest = data.split(b"\n")
        if not chunk and rest:  # the agent ended without a final newline
            lines, rest = [*lines, rest], b""
        if rest:
            self.partial[key] = rest
        for line in lines:
            self._put(agent, stream, line.decode("utf-8", "replace"))
        if lines:
            self._flush(stream)
        return bool(chunk)

    def _put(self, agent: Agent, stream: str, text: str) -> None:
        if self.reader_gone:
            return
        if self.jsonl and text.startswith("{"):
            with contextlib.suppress(ValueError):
                body = json.loads(text)
                if ev.relayed_copy(body, agent.node):
                    return  # node 0's line says it
                text = json.dumps({**body, "node": agent.node}, separators=(",", ":"))
        else:
            text = f"{agent.host}: {text}"
        try:
            self.out[stream].write(text + "\n")
        except OSError:
            self._lost_reader(stream)

    def _flush(self, stream: str) -> None:
        if self.reader_gone:
            return
        try:
            self.out[stream].flush()
        except OSError:
            self._lost_reader(stream)

    def _lost_reader(self, stream: str) -> None:
        """Our reader went away (`fakerun --nodes 2 | head`): the agents are
        told to stop, and what they still say is dropped, as one agent's
        launcher goes quiet on its own closed output (exit 141)."""
        self.reader_gone = True
        silence(self.out[stream])  # nor may the interpreter's final flush fail
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    def _kill_all(self) -> None:
        """Whatever ended us, no agent (and so no rank: they die with their
        agent) outlives the cluster."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
