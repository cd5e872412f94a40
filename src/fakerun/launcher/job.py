"""The job loop: one attempt of this node's part of a job.

One thread, one loop: poll the coordinator link and the signal wakeup fd,
apply what arrived, reap exited ranks, check deadlines, render. The first
failure stops the group (supervisor.py); the exit code is failures.exit_code.
What the loop reaches beyond this process (forking, zmq, polling, this
node's link) comes in through `Edges`, so tests drive it with fakes.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import psutil
import zmq

from fakerun import events as ev
from fakerun import failures
from fakerun.checkpoint import Resume, layouts
from fakerun.config.options import RunConfig
from fakerun.errors import ExitCode
from fakerun.launcher import build, srun
from fakerun.launcher.edges import IO, Edges, Inbox, Served, View
from fakerun.launcher.join import join_command
from fakerun.launcher.links import Hub
from fakerun.launcher.local_link import LocalHub
from fakerun.launcher.remote_link import RemoteHub
from fakerun.launcher.supervisor import Stop, Supervisor
from fakerun.launcher.workers import ForkFailed
from fakerun.protocol.keys import JobKeys
from fakerun.system.rundir import RunDir
from fakerun.system.signals import REQUEUE_SIGNAL
from fakerun.world.clock import VirtualClock
from fakerun.world.identity import PYTHON

REAP_EVERY_S = 1.0  # safety net should a SIGCHLD ever be coalesced away
LINGER_S = 10.0  # node 0 keeps the coordinator up this long for other nodes still leaving
POLLIN = int(zmq.POLLIN)


class Job:
    """One run of the worker group: fork, coordinate, supervise, tear down."""

    def __init__(self, config: RunConfig, io: IO, inbox: Inbox, view: View, clock: VirtualClock | None,
                 rundir: RunDir, attempt: int = 0, restartable: bool = False,
                 edges: Edges | None = None, served: Served | None = None) -> None:
        self.config, self.io, self.inbox, self.view, self.rundir = config, io, inbox, view, rundir
        self.edges = edges or Edges()
        self.served = served  # sockets the loop serves beside its own (--metrics-port's endpoint)
        self.attempt = attempt
        self.restartable = restartable  # a failure now is followed by a restart, not reported
        self.last_checkpoint: Resume | None = config.resume_from
        self.topo, self.ident = config.topology, config.identity
        self.token = config.token or secrets.token_hex(16)
        self.keys = JobKeys.derive(self.token)  # 42 µs: cheaper than deciding whether a link needs them
        self.clock = clock or build.run_clock(config, io.monotonic)
        self.exit_signal: int | None = None
        self.sup: Supervisor | None = None
        self.hub: Hub | None = None
        self.writer = self._checkpoint_writer()
        self.linger_until: float | None = None
        self.launcher_pid = build.display_pid(config, os.getpid(), -20)

    def restartable_failure(self) -> bool:
        return self.restartable and self._stop_reason() == "failure"

    def run(self) -> int:
        local, listen = build.endpoints(self.config, self.rundir)
        specs = build.rank_specs(self.config, self.rundir, self.attempt, self.token, local)
        where = f"--log-dir {self.config.log_dir}" if self.config.log_dir else f"rank logs {self.rundir.logs}"
        self.view.open_rank_logs({s.rank: (s.stdout_path, s.stderr_path) for s in specs}, where)
        self._emit(build.run_started(self.config, self.attempt, self.launcher_pid, self.clock()))
        self._emit(ev.RunIdentity(self.ident))
        self.view.flush()
        # Fork before the zmq Context exists: no I/O threads to fork across.
        try:
            group = self.edges.fork(specs, self.config)
        except ForkFailed as exc:  # none of its ranks is left: nothing to tear down but the logs
            self._emit(ev.AgentError(str(exc)))
            self.view.flush()
            self.view.close_rank_logs()
            return failures.exit_code("error", False)
        self.sup = Supervisor(self.config, group, self.clock, self.io.monotonic, self._emit)
        self._connect_and_loop([local, *listen])
        return self._exit_code()

    def _connect_and_loop(self, endpoints: list[str]) -> None:
        ctx = self.edges.context()
        try:
            self.hub = self._connect(ctx, endpoints)
            self._loop()
        except zmq.ZMQError as exc:  # e.g. --master-port in use, or not an address of ours
            where = f"{self.config.master_addr}:{self.config.master_port}"
            self._emit(ev.AgentError(f"cannot use {where}: {exc.strerror}"))
            self.sup.stop = Stop("error", 0.0, int(signal.SIGTERM))
        finally:
            self.sup.kill_leftovers()
            if self.hub is not None:
                self.hub.close()
            ctx.destroy(linger=0)
            self.view.close_rank_logs()

    def _connect(self, ctx: Any, endpoints: list[str]) -> Hub:
        if self.edges.connect is not None:
            return self.edges.connect(ctx, endpoints)
        now = self.io.monotonic()
        if self.config.agents.node_rank == 0:
            exit_after = self.config.exit_after_s
            deadline = now + exit_after if exit_after else None
            core = build.coordinator(self.config, self.clock, self.token, deadline, self.io.monotonic,
                                     self.attempt)
            return LocalHub(ctx, endpoints, core, self._join_commands, now, self.keys)
        return RemoteHub(ctx, endpoints[0], build.agent_hello(self.config, self.token),
                         self.config.node_timeout_s, now, self.clock, self.keys, await_close=self.config.loop)

    def _join_commands(self, missing: list[int]) -> list[str]:
        if self.config.task is not None:  # srun starts every task: there is nothing to run by hand
            return []
        return [join_command(self.config, node, self.token) for node in missing]

    def _checkpoint_writer(self) -> layouts.CheckpointSink | None:
        # Like rank 0 of a real job, node 0 (srun's task 0) alone writes checkpoints (to shared storage).
        if self.config.output_dir is None or self.config.agents.node_rank != 0:
            return None
        c = self.config
        saving = layouts.Saving(c.output_dir, self.ident, c.seed, c.resume_from, c.sparse_checkpoints,
                                c.entrypoint, c.script_args, c.asked.trainer,
                                str(c.tensorboard) if c.tensorboard else "")
        return layouts.writer_for(c.style.name, saving)

    # -- the loop -------------------------------------------------------
    def _loop(self) -> None:
        # A pass per wake-up, and a collective wakes us once or twice: the
        # pass itself must stay cheap. The poll gets its items built once.
        sock, inbox = self.hub.socket, self.inbox.fileno()
        items = [(sock, POLLIN), (inbox, POLLIN)]
        rdzv_deadline = self.io.monotonic() + self.config.rdzv_timeout_s
        next_reap = 0.0
        while not self._done():
            hub_due = self.hub.next_deadline()
            polled = items if self.served is None else items + self.served.poll_items()
            ready = dict(self.edges.poll(polled, self._poll_ms(rdzv_deadline, hub_due)))
            now = self.io.monotonic()
            if self.served is not None:
                self.served.serve(ready, now)
            if sock in ready:
                self._emit_all(self.hub.receive(now))
            # The hub's timed work (watchdog, heartbeats, batches) waits for its
            # next_deadline, which the poll wakes us for: before it, tick is a
            # no-op. What receive just started is due later still.
            if hub_due is not None and now >= hub_due:
                self._emit_all(self.hub.tick(now))
            signals = self.inbox.take() if inbox in ready else []
            self._on_signals(signals)
            if signal.SIGCHLD in signals or now >= next_reap:
                self._check_lifeline()
                self.sup.reap(self._stop_for_failure)
                next_reap = now + REAP_EVERY_S
            self._check_deadlines(now, rdzv_deadline)
            self._flush()
        self._finish()

    def _done(self) -> bool:
        """Our ranks are gone, and (node 0) no other node still needs the
        coordinator, or it has had its time to leave."""
        if not self.sup.group.done():
            return False
        now = self.io.monotonic()
        if self.linger_until is None:
            self.linger_until = now + max(self.config.shutdown_grace_s, LINGER_S)
            self.hub.finished()
        return not self.hub.lingering or now >= self.linger_until

    def _poll_ms(self, rdzv_deadline: float, hub_due: float | None) -> int:
        # Once a wake-up, as the loop itself: no list or generator built here.
        now = self.io.monotonic()
        nearest = now + REAP_EVERY_S if hub_due is None else min(now + REAP_EVERY_S, hub_due)
        sup_due = self.sup.next_deadline()
        if sup_due is not None:
            nearest = min(nearest, sup_due)
        if self.sup.stop is None and not self.hub.ready:
            nearest = min(nearest, rdzv_deadline)
        return max(0, int((nearest - now) * 1000) + 1)

    def _emit_all(self, events: list[ev.Event]) -> None:
        for event in events:
            self._emit(event)

    def _emit(self, event: ev.Event) -> None:
        self._note(event)
        self.view.emit(event)
        if self.writer is not None:
            try:
                self.writer.event(event)
            except OSError as exc:  # e.g. a full disk: no half checkpoint, one error line, stop
                self.writer = None
                self.view.fail(f"--output-dir {self.config.output_dir}: {exc.strerror or exc}")

    def _note(self, event: ev.Event) -> None:
        """What the loop learns from an event before it is shown."""
        if isinstance(event, ev.WatchdogTimeout):  # the waiting ranks will abort on their own
            self.sup.expect_exits(set(event.waiting))
        elif isinstance(event, ev.Step) and not math.isfinite(event.loss):  # every rank stops on its own
            self.sup.expect_exits(set(self.topo.node_ranks()))
        elif isinstance(event, ev.Checkpoint):
            history = self.writer.saved_history(event.step) if self.writer is not None else ()
            # A restart carries on the same curve, anchored as this run's was.
            scale = self.config.resume_from.loss_scale if self.config.resume_from is not None else 1.0
            self.last_checkpoint = Resume(event.step, event.time, Path(event.path), history=history,
                                          loss_scale=scale)
        elif isinstance(event, ev.NodeLost):
            self._on_node_lost(event)

    def _on_node_lost(self, event: ev.NodeLost) -> None:
        agent = self.config.agents.node_rank  # as the coordinator numbers nodes: srun tasks, one a rank
        if event.node_rank != agent and agent == 0:
            self.sup.expect_exits(set(self.topo.node_ranks()))  # their collectives abort: let them say so
        elif event.node_rank == 0 and self.sup.stop is None:  # node 0 is gone, and the job with it
            self.sup.begin_stop("failure", signal.SIGTERM)

    def _flush(self) -> None:
        state = self.view.flush()
        if state.failure and self.sup.stop is None:  # a file we must write failed: stop, say why
            self._emit(ev.OutputFailed(state.failure))
            self.sup.begin_stop("output-failed", signal.SIGTERM)
        if state.closed and self.sup.stop is None:
            self.sup.begin_stop("output", signal.SIGTERM)

    # -- signals, deadlines, the end ------------------------------------
    def _on_signals(self, signals: list[int]) -> None:
        for signum in signals:
            if signum == REQUEUE_SIGNAL:
                self._emit_all(srun.on_requeue_signal(self.config, self.sup.group, self.hub))
            if signum not in srun.stop_signals(self.config):
                continue
            if self.sup.stop is None:
                self.exit_signal = signum
                # A rank that handles the signal stops at the next step.
                self._emit_all(self.hub.request_stop())
                self._emit(ev.ShutdownRequested(signum, self.clock()))
                self.sup.begin_stop("signal", signal.Signals(signum))
            else:  # a second Ctrl+C: no more grace
                self.sup.hurry()

    def _stop_for_failure(self) -> None:
        first = self.sup.first_failure()
        self._emit_all(self.hub.local_failure(f"rank {first.rank} exited with code {first.exitcode}"))
        self.sup.begin_stop("failure", signal.SIGTERM)

    def _check_lifeline(self) -> None:
        """The local cluster that started us is gone: leave as on a hangup."""
        lifeline = self.config.lifeline
        if lifeline and self.sup.stop is None and not psutil.pid_exists(lifeline):
            self._on_signals([signal.SIGHUP])

    def _check_deadlines(self, now: float, rdzv_deadline: float) -> None:
        if self.sup.stop is None and self.sup.failures and not self.sup.awaiting_aborts():
            self._stop_for_failure()
        if self.sup.stop is None and not self.hub.ready and now >= rdzv_deadline:
            self._emit(ev.RendezvousTimeout(self.config.rdzv_timeout_s, self.hub.joined(),
                                            self.topo.world_size, self.clock(), self.hub.missing_nodes()))
            self.sup.begin_stop("rendezvous", signal.SIGTERM)
        self.sup.kill_if_due(now)

    def _finish(self) -> None:
        self._emit_all(self.hub.flush_output())
        for event in sorted(self.sup.exited_ok, key=lambda e: e.rank):
            self._emit(event)
        if self._stop_reason() == "failure" and self.sup.failures:
            root, others = failures.root_cause(self.sup.failures)
            if self.restartable:  # every attempt's first failure; the report only for the last
                self._emit(ev.AttemptFailed(PYTHON, root, self.sup.failed_at()))
            else:
                self._emit(ev.RunFailed(self.config.launch.entry_name(self.config.entrypoint), PYTHON,
                                        self.launcher_pid,
                                        root, others, self.sup.failed_at()))
        if not self.restartable_failure():
            self._emit(ev.RunFinished(self._exit_code(), self.hub.steps, self.hub.rejected()))
        self.view.flush()

    def _stop_reason(self) -> str | None:
        stop = self.sup.stop if self.sup is not None else None
        return stop.reason if stop is not None else None

    def _exit_code(self) -> int:
        if self.config.loop and self.exit_signal is not None:  # fakerun's screensaver: the shell's 128+N
            return ExitCode.of_signal(self.exit_signal)
        ended = srun.rank_ended(self.config, self._stop_reason(), self.sup)
        if ended is not None:  # srun's task: the script itself, no torchrun
            return srun.task_exit(ended)
        return failures.exit_code(self._stop_reason(), bool(self.sup and self.sup.failures))

    def killed_by(self) -> int | None:
        """The signal srun's task is to die of, once the job is over."""
        ended = srun.rank_ended(self.config, self._stop_reason(), self.sup)
        return srun.task_signal(ended) if ended is not None else None
