"""The launcher ("agent"): starts this node's ranks, hosts the coordinator on
node 0, supervises, and tears everything down torch-elastic style.

One thread, one loop: poll the coordinator socket and the signal wakeup fd,
apply what arrived, reap exited ranks, check deadlines, render. The first
failure stops the group (SIGTERM, grace, SIGKILL); exit codes are 0 success,
1 a rank failed, 128+N for signal N (130 SIGINT, 143 SIGTERM, 131 SIGQUIT), 141 when our
reader went away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import secrets
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil
import zmq

from . import events as ev
from .checkpoint import CheckpointWriter, Resume
from .clock import VirtualClock, local_now, parse_start
from .config import RunConfig
from .coordinator import Coordinator, JobIdentity
from .hub import LocalHub, RemoteHub
from .keys import JobKeys
from .protocol import AgentHello
from .rank import EXIT_INTERNAL, RankSpec
from .render import Renderer, build_renderer
from .render.console import silence
from .rundir import RunDir
from .runtime import RuntimeDirError
from .signals import STOP_SIGNALS, SignalInbox, StopOverdue
from .smi import SNAPSHOT_NAME, SmiStateSink
from .timeline import Timeline
from .workers import ForkFailed, Worker, WorkerGroup

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141
REAP_EVERY_S = 1.0  # safety net should a SIGCHLD ever be coalesced away
ABORT_WAIT_S = 2.0  # how long aborting ranks may take before SIGTERM goes out
LINGER_S = 10.0  # node 0 keeps the coordinator up this long for other nodes still leaving
FINISH_MARGIN_S = 5.0  # a stop's grace and linger, then reaping, the last lines, removing the run dir
POLLIN = int(zmq.POLLIN)


@dataclass
class IO:
    """The launcher's edges, injected so tests and the API can replace them."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    monotonic: Callable[[], float] = time.monotonic
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Stop:
    reason: str  # failure | signal | output | output-failed | rendezvous
    kill_at: float
    signal: int
    killed: bool = False


def worker_env(config: RunConfig, rank: int, local_rank: int, extra: dict[str, str]) -> dict[str, str]:
    topo = config.topology
    env = {
        "RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": topo.world_size,
        "LOCAL_WORLD_SIZE": topo.nproc_per_node, "GROUP_RANK": topo.node_rank,
        "GROUP_WORLD_SIZE": topo.nnodes, "ROLE_RANK": rank, "ROLE_NAME": "default",
        "ROLE_WORLD_SIZE": topo.world_size, "MASTER_ADDR": config.master_addr,
        "MASTER_PORT": config.master_port, "TORCHELASTIC_RUN_ID": config.run_id,
        "TORCHELASTIC_RESTART_COUNT": 0, "TORCHELASTIC_MAX_RESTARTS": config.max_restarts,
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": 1,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return {k: str(v) for k, v in env.items()} | extra


class Launcher:
    def __init__(self, config: RunConfig, io: IO | None = None) -> None:
        self.config = config
        self.io = io or IO()
        self.renderer: Renderer | None = None
        self.exit_signal: int | None = None
        self.clock: VirtualClock | None = None  # carried across --loop cycles

    def run(self) -> int:
        """Run once, or (--loop) fresh runs until one fails or a signal stops us."""
        # No system call may outlive a stop signal (a write to a stalled reader):
        grace = self.config.shutdown_grace_s
        self.inbox = SignalInbox(finish_within=grace + max(grace, LINGER_S) + FINISH_MARGIN_S)
        try:
            # One token for every run of a --loop: the other nodes were given it once.
            first = self.config if self.config.token else dataclasses.replace(
                self.config, token=secrets.token_hex(16))
            config, cycle = first, 0
            while True:
                code = self._cycle(config)
                if not config.loop or code != EXIT_OK or self.exit_signal is not None:
                    return code
                cycle += 1
                config = first.next_run(cycle)
                gc.collect()  # the last run's cyclic garbage, before the next run's ranks fork and copy it
        except StopOverdue as exc:  # stuck writing to a reader that stopped reading: the job is torn down
            for stream in (self.io.stdout, self.io.stderr):
                silence(stream)  # so that nothing (closing sinks, the exit's flush) blocks on it again
            return 128 + exc.signum
        finally:
            if self.renderer is not None:
                self.renderer.close()
            self.inbox.close(last_words=True)

    def _cycle(self, config: RunConfig) -> int:
        """One run: its attempts (--max-restarts) share a run dir and a clock."""
        stable = _stable_suffix(config) if config.deterministic else None
        try:
            RunDir.sweep()
            rundir = RunDir.create(config.run_id, config.log_dir, stable,
                                   ipc=config.topology.node_rank == 0)
        except RuntimeDirError as exc:  # like an unwritable --log-dir: fixed by the user's settings
            self.io.stderr.write(f"fakerun: error: {exc}\n")
            return EXIT_USAGE
        if config.topology.node_rank == 0:  # the coordinator's node sees every GPU: `fakerun smi`
            renderer = self._renderer(config)
            renderer.attach(SmiStateSink(rundir.private / SNAPSHOT_NAME,
                                         renderer.binary))
        try:
            attempt = 0
            while True:
                job = Job(config, self.io, self.inbox, self._renderer(config), self.clock, rundir, attempt,
                          restartable=attempt < config.max_restarts)
                code = job.run()
                self.exit_signal, self.clock = job.exit_signal, job.clock
                if not job.restartable_failure():
                    return code
                attempt += 1
                config = dataclasses.replace(config, fault=None, resume_from=job.last_checkpoint)
                job.renderer.emit(ev.Restart(attempt, config.max_restarts,
                                             job.last_checkpoint.step if job.last_checkpoint else 0,
                                             self.clock.now))
        finally:
            rundir.remove()

    def _renderer(self, config: RunConfig) -> Renderer:
        if self.renderer is None:
            self.renderer = build_renderer(config, self.io.stdout, self.io.stderr, self.io.environ)
        return self.renderer


class Job:
    """One run of the worker group: fork, coordinate, supervise, tear down."""

    def __init__(self, config: RunConfig, io: IO, inbox: SignalInbox, renderer: Renderer,
                 clock: VirtualClock | None, rundir: RunDir, attempt: int = 0,
                 restartable: bool = False) -> None:
        self.rundir = rundir
        self.attempt = attempt
        self.restartable = restartable  # a failure now is followed by a restart, not reported
        self.last_checkpoint: Resume | None = config.resume_from
        self.config = config
        self.io = io
        self.inbox = inbox
        self.renderer = renderer
        self.topo = config.topology
        self.ident = config.identity
        self.token = config.token or secrets.token_hex(16)
        self.keys = JobKeys.derive(self.token)  # 42 µs: cheaper than deciding whether a link needs them
        self.clock = clock or _clock(config)
        self.failures: list[ev.Failure] = []
        self.stop: Stop | None = None
        self.exit_signal: int | None = None
        self.group: WorkerGroup | None = None
        self.hub: LocalHub | RemoteHub | None = None
        self.exited_ok: list[ev.RankExited] = []  # announced in rank order at the end
        self.expected_aborts: set[int] = set()
        self.abort_deadline = 0.0
        # Like rank 0 of a real job, node 0 alone writes checkpoints (to shared storage).
        resumed = config.resume_from.history if config.resume_from is not None else ()
        self.writer = (CheckpointWriter(config.output_dir, self.ident, config.seed, resumed)
                       if config.output_dir is not None and self.topo.node_rank == 0 else None)
        self.linger_until: float | None = None
        self.launcher_pid = _display_pid(config, os.getpid(), -20)

    def run(self) -> int:
        return self._run()

    def restartable_failure(self) -> bool:
        return self.restartable and self.stop is not None and self.stop.reason == "failure"

    def _run(self) -> int:
        local, listen = self._endpoints()
        specs = self._specs(local)
        where = f"--log-dir {self.config.log_dir}" if self.config.log_dir else f"rank logs {self.rundir.logs}"
        self.renderer.open_rank_logs({s.rank: (s.stdout_path, s.stderr_path) for s in specs}, where)
        self._emit(self._run_started())
        self._emit(ev.RunIdentity(self.ident))
        self.renderer.flush()
        # Fork before the zmq Context exists: no I/O threads to fork across.
        try:
            self.group = WorkerGroup.fork(specs, self.config)
        except ForkFailed as exc:  # none of its ranks is left: nothing to tear down but the logs
            self._emit(ev.AgentError(str(exc)))
            self.stop = Stop("error", 0.0, int(signal.SIGTERM))
            self.renderer.flush()
            self.renderer.close_rank_logs()
            return self._exit_code()
        ctx = zmq.Context()
        try:
            self.hub = self._hub(ctx, [local, *listen])
            self._loop()
        except zmq.ZMQError as exc:  # e.g. --master-port in use, or not an address of ours
            where = f"{self.config.master_addr}:{self.config.master_port}"
            self._emit(ev.AgentError(f"cannot use {where}: {exc.strerror}"))
            self.stop = Stop("error", 0.0, int(signal.SIGTERM))
        finally:
            self._kill_leftovers()
            if self.hub is not None:
                self.hub.close()
            ctx.destroy(linger=0)
            self.renderer.close_rank_logs()
        return self._exit_code()

    def _endpoints(self) -> tuple[str, list[str]]:
        """Where this node's ranks connect, and (node 0 of several) where the
        other nodes connect: --master-addr, which is loopback unless told otherwise."""
        c = self.config
        tcp = f"tcp://{_address(c.master_addr)}:{c.master_port}"
        if self.topo.node_rank > 0:
            return tcp, []
        # Always ipc:// in the user's private directory (RunDir.create refused
        # a path too long for one): loopback TCP would be open to every user.
        return self.rundir.endpoint(), [tcp] if self.topo.nnodes > 1 else []

    def _hub(self, ctx: zmq.Context, endpoints: list[str]) -> LocalHub | RemoteHub:
        now = self.io.monotonic()
        if self.topo.node_rank == 0:
            return LocalHub(ctx, endpoints, self._coordinator(), self._join_commands, now, self.keys)
        hello = AgentHello(self.topo.node_rank, self.topo.nproc_per_node, os.getpid(),
                           self.ident.host(self.topo.global_rank(0)), self.config.run_id, self.token,
                           self.config.digest())
        return RemoteHub(ctx, endpoints[0], hello, self.config.node_timeout_s, now, self.clock, self.keys,
                         await_close=self.config.loop)

    def _join_commands(self, missing: list[int]) -> list[str]:
        return [join_command(self.config, node, self.token) for node in missing]

    def _coordinator(self) -> Coordinator:
        exit_after = self.config.exit_after_s
        deadline = self.io.monotonic() + exit_after if exit_after else None
        resumed = self.config.resume_from.step if self.config.resume_from else 0
        timeline = Timeline(self.ident, self.clock, deadline, self.io.monotonic,
                            str(self.config.output_dir) if self.config.output_dir else None, resumed)
        digest = self.config.digest() if self.topo.nnodes > 1 else ""
        job = JobIdentity(self.config.run_id, self.token, self.topo.world_size, self.topo.nnodes, digest,
                          self.config.node_timeout_s, bounds=self.config.bounds)
        return Coordinator(job, self.config.collective_timeout_s, self.clock, timeline,
                           report_wall=not self.config.deterministic)

    def _specs(self, endpoint: str) -> list[RankSpec]:
        specs = []
        for local in self.topo.local_ranks():
            rank = self.topo.global_rank(local)
            out, err = self.rundir.rank_logs(self.attempt, local)
            env = worker_env(self.config, rank, local, {
                "TORCHELASTIC_RESTART_COUNT": str(self.attempt),
                "TORCHELASTIC_ERROR_FILE": str(self.rundir.error_file(self.attempt, local)),
                "FAKERUN_COORDINATOR": endpoint,
            })
            specs.append(RankSpec(rank, local, self.topo.node_rank, endpoint, self.token,
                                  self.config.run_id, env, os.getpid(), str(out), str(err),
                                  _display_pid(self.config, 0, local)))
        return specs

    def _run_started(self) -> ev.RunStarted:
        c, t = self.config, self.topo
        return ev.RunStarted(
            c.run_id, t.world_size, t.nnodes, t.nproc_per_node, t.node_rank, c.seed,
            c.entrypoint, list(c.script_args), c.steps, c.master_addr, c.master_port,
            self.launcher_pid, self.attempt, self.clock.now, "OMP_NUM_THREADS" not in os.environ)

    # -- the loop -------------------------------------------------------
    def _loop(self) -> None:
        # A pass per wake-up, and a collective wakes us once or twice: the
        # pass itself must stay cheap. zmq_poll gets its items built once.
        sock, inbox = self.hub.socket, self.inbox.fileno()
        items = [(sock, POLLIN), (inbox, POLLIN)]
        rdzv_deadline = self.io.monotonic() + self.config.rdzv_timeout_s
        next_reap = 0.0
        while not self._done():
            hub_due = self.hub.next_deadline()
            ready = dict(zmq.zmq_poll(items, self._poll_ms(rdzv_deadline, hub_due)))
            now = self.io.monotonic()
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
                self._reap()
                next_reap = now + REAP_EVERY_S
            self._check_deadlines(now, rdzv_deadline)
            self._flush()
        self._finish()

    def _done(self) -> bool:
        """Our ranks are gone, and (node 0) no other node still needs the
        coordinator, or it has had its time to leave."""
        if not self.group.done():
            return False
        now = self.io.monotonic()
        if self.linger_until is None:
            self.linger_until = now + max(self.config.shutdown_grace_s, LINGER_S)
            self.hub.finished()
        return not self.hub.lingering or now >= self.linger_until

    def _poll_ms(self, rdzv_deadline: float, hub_due: float | None) -> int:
        now = self.io.monotonic()
        nearest = now + REAP_EVERY_S if hub_due is None else min(now + REAP_EVERY_S, hub_due)
        if self.stop is None:
            if self.failures:
                nearest = min(nearest, self.abort_deadline)
            if not self.hub.ready:
                nearest = min(nearest, rdzv_deadline)
        elif not self.stop.killed:
            nearest = min(nearest, self.stop.kill_at)
        return max(0, int((nearest - now) * 1000) + 1)

    def _emit_all(self, events: list[Any]) -> None:
        for event in events:
            self._emit(event)

    def _emit(self, event: Any) -> None:
        if isinstance(event, ev.WatchdogTimeout):  # the waiting ranks will abort on their own
            self._expect_exits(set(event.waiting))
        if isinstance(event, ev.Step) and not math.isfinite(event.loss):  # every rank stops on its own
            self._expect_exits(set(self.topo.node_ranks()))
        if isinstance(event, ev.Checkpoint):
            history = self.writer.saved_history(event.step) if self.writer is not None else ()
            self.last_checkpoint = Resume(event.step, event.time, Path(event.path), history=history)
        if isinstance(event, ev.NodeLost):
            self._on_node_lost(event)
        self.renderer.emit(event)
        if self.writer is not None:
            try:
                self.writer.event(event)
            except OSError as exc:  # e.g. a full disk: no half checkpoint, one error line, stop
                self.writer = None
                self.renderer.failure = self.renderer.failure or (
                    f"--output-dir {self.config.output_dir}: {exc.strerror or exc}")

    def _on_node_lost(self, event: ev.NodeLost) -> None:
        if event.node_rank != self.topo.node_rank and self.topo.node_rank == 0:
            self._expect_exits(set(self.topo.node_ranks()))  # their collectives abort: let them say so
        elif event.node_rank == 0 and self.stop is None:  # node 0 is gone, and the job with it
            self._begin_stop("failure", signal.SIGTERM)

    def _flush(self) -> None:
        self.renderer.flush()
        if self.renderer.failure and self.stop is None:  # a file we must write failed: stop, say why
            self._emit(ev.OutputFailed(self.renderer.failure))
            self._begin_stop("output-failed", signal.SIGTERM)
        if self.renderer.output_closed and self.stop is None:
            self._begin_stop("output", signal.SIGTERM)

    # -- signals, exits, teardown ---------------------------------------
    def _on_signals(self, signals: list[int]) -> None:
        for signum in signals:
            if signum not in STOP_SIGNALS:
                continue
            if self.stop is None:
                self.exit_signal = signum
                # A rank that handles the signal stops at the next step.
                self._emit_all(self.hub.request_stop())
                self._emit(ev.ShutdownRequested(signum, self.clock.now))
                self._begin_stop("signal", signal.Signals(signum))
            elif not self.stop.killed:  # a second Ctrl+C: no more grace
                self.stop.kill_at = self.io.monotonic()

    def _reap(self) -> None:
        for worker in sorted(self.group.reap(), key=lambda w: w.rank):  # one pass: rank order
            code = worker.exitcode or 0
            pid = self._pid(worker)
            exited = ev.RankExited(worker.rank, worker.local_rank, self.topo.node_rank, pid, code)
            if code == 0 or self.stop is not None:  # reap order is the scheduler's: hold these
                self.exited_ok.append(exited)
                if code == 0:
                    continue
            else:
                self._emit(exited)
            if code == EXIT_INTERNAL:  # a fakerun bug, not a simulated fault: show its traceback
                self._emit(ev.RankOutput(worker.rank, "stderr", _tail(worker.spec.stderr_path),
                                         reported_by=self.topo.node_rank))
            if code != 0:
                self.failures.append(self._failure(worker, pid, code))
                if self.stop is None and not self._awaiting_aborts():
                    self._stop_for_failure()

    def _expect_exits(self, ranks: set[int]) -> None:
        self.expected_aborts = ranks & set(self.topo.node_ranks())
        self.abort_deadline = self.io.monotonic() + ABORT_WAIT_S

    def _stop_for_failure(self) -> None:
        # Several ranks may have failed before the teardown (a watchdog's
        # simultaneous aborts): which was reaped first is the scheduler's
        # choice; rank order is ours.
        self.failures.sort(key=lambda f: f.rank)
        first = self.failures[0]
        self._emit_all(self.hub.local_failure(f"rank {first.rank} exited with code {first.exitcode}"))
        self._begin_stop("failure", signal.SIGTERM)

    def _awaiting_aborts(self) -> bool:
        """After a watchdog timeout, the waiting ranks abort on their own: let
        them (bounded) before SIGTERM races them, as their failures decide the
        report."""
        if self.io.monotonic() >= self.abort_deadline:
            return False
        return any(w.rank in self.expected_aborts for w in self.group.running())

    def _failure(self, worker: Worker, pid: int, code: int) -> ev.Failure:
        """torch elastic's ProcessFailure: with an error file (@record), its
        traceback and timestamp; without, a message from the exit code."""
        failure = ev.Failure(worker.rank, worker.local_rank, self.topo.node_rank, pid, code,
                             self.clock.now, self.ident.host(worker.rank))
        path = worker.spec.env.get("TORCHELASTIC_ERROR_FILE", "")
        try:
            with open(path, encoding="utf-8") as handle:
                extra = json.load(handle)["message"]["extraInfo"]
            return dataclasses.replace(failure, error_file=path, message=extra["py_callstack"],
                                       time=float(extra["timestamp"]))
        except (OSError, ValueError, KeyError, TypeError):
            return failure

    def _pid(self, worker: Worker) -> int:
        return worker.spec.display_pid or worker.pid

    def _begin_stop(self, reason: str, sig: signal.Signals) -> None:
        self.stop = Stop(reason, self.io.monotonic() + self.config.shutdown_grace_s, int(sig))
        # The lines first, while the ranks are still (blocked in their
        # collectives, so) idle: after the signals, a launcher writing 1024
        # of them shares the CPU with 1024 ranks being torn down. Measured at
        # --nproc 1024 (6 interleaved rounds each): lines first 1.16 s median
        # from SIGINT to exit, signals first 1.24 s, interleaved 1.23 s; no
        # more than this shared machine's noise, so torchrun's order stays.
        for worker in self.group.running():
            self._emit(ev.ClosingSignal(worker.rank, worker.local_rank, self._pid(worker), sig.name,
                                        self.clock.now))
        self.group.send(sig)

    def _check_lifeline(self) -> None:
        """The local cluster that started us is gone: leave as on a hangup."""
        lifeline = self.config.lifeline
        if lifeline and self.stop is None and not psutil.pid_exists(lifeline):
            self._on_signals([signal.SIGHUP])

    def _check_deadlines(self, now: float, rdzv_deadline: float) -> None:
        if self.stop is None and self.failures and not self._awaiting_aborts():
            self._stop_for_failure()
        if self.stop is None and not self.hub.ready and now >= rdzv_deadline:
            self._emit(ev.RendezvousTimeout(self.config.rdzv_timeout_s, self.hub.joined(),
                                            self.topo.world_size, self.clock.now, self.hub.missing_nodes()))
            self._begin_stop("rendezvous", signal.SIGTERM)
        if self.stop is not None and not self.stop.killed and now >= self.stop.kill_at:
            self.stop.killed = True
            for worker in self.group.running():
                self._emit(ev.ForcedKill(worker.rank, self._pid(worker), self.clock.now, self.stop.signal))
            self.group.send(signal.SIGKILL)

    def _finish(self) -> None:
        self._emit_all(self.hub.flush_output())
        for event in sorted(self.exited_ok, key=lambda e: e.rank):
            self._emit(event)
        if self.stop is not None and self.stop.reason == "failure" and self.failures \
                and not self.restartable:  # torchrun reports only the last attempt's failure
            # torch elastic: the earliest failure by whole-second timestamp, ties to the
            # first observed (its failures dict keeps observation order)
            root = min(self.failures, key=lambda f: int(f.time))
            others = [f for f in self.failures if f is not root]
            self._emit(ev.RunFailed(self.config.entrypoint, self.renderer.binary, self.launcher_pid,
                                    root, others, self.clock.now))
        if not self.restartable_failure():
            self._emit(ev.RunFinished(self._exit_code(), self.hub.steps, self.hub.rejected()))
        self.renderer.flush()

    def _exit_code(self) -> int:
        if self.exit_signal is not None:
            return 128 + self.exit_signal
        if self.stop is not None and self.stop.reason == "output":
            return EXIT_PIPE
        if self.stop is not None or self.failures:
            return EXIT_FAILED
        return EXIT_OK

    def _kill_leftovers(self) -> None:
        """Whatever path got us here, no rank outlives the launcher."""
        group = self.group
        if group is not None and group.running():
            group.send(signal.SIGKILL)
            for worker in group.running():
                with contextlib.suppress(psutil.Error):
                    worker.proc.wait(timeout=5)


def join_command(config: RunConfig, node: int, token: str) -> str:
    """What to run on node `node` to join this job (node 0's hint). The
    token rides in the environment, out of `ps`."""
    prefix, options = _join_token(config, token)
    args = ["fakerun", "--nnodes", str(config.topology.nnodes),
            "--nproc-per-node", str(config.topology.nproc_per_node), "--node-rank", str(node),
            "--master-addr", config.master_addr, "--master-port", str(config.master_port),
            "--rdzv-id", config.run_id, "--seed", str(config.seed)]
    for flag, value in (("--max-steps", config.max_steps), ("--model", config.model),
                        ("--gpu", config.gpu), ("--start-time", config.start_time),
                        ("--style", str(config.style))):
        if value is not None:
            args += [flag, str(value)]
    if config.speed != 1.0:
        args += ["--speed", f"{config.speed:g}"]
    return prefix + shlex.join([*args, *options, config.entrypoint, *config.script_args])


def _join_token(config: RunConfig, token: str) -> tuple[str, list[str]]:
    """How a joining node gets the token: (an environment prefix, options).
    Node 0's output often lands in logs others read, so it shows the token
    only if node 0 made it up (nowhere else to learn it); a token that has a
    home is named by it."""
    if config.token_file is not None:
        return "", ["--token-file", str(config.token_file)]
    if config.token_job is not None:  # the node derives it from your secret, as node 0 did
        return f"SLURM_JOB_ID={shlex.quote(config.token_job)} ", []
    if config.token:
        return 'FAKERUN_TOKEN="$FAKERUN_TOKEN" ', []  # yours: set it there as here
    return f"FAKERUN_TOKEN={shlex.quote(token)} ", []


def _address(host: str) -> str:
    """zmq binds and connects to addresses: resolve a host name once."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):  # UnicodeError: a label over 63 characters fails IDNA encoding
        return host  # zmq reports the problem in its own words


def _clock(config: RunConfig) -> VirtualClock:
    start, tz = parse_start(config.start_time) if config.start_time else local_now()
    if config.resume_from is not None and not config.start_time:
        start = max(start, config.resume_from.time)  # a resumed run continues after its checkpoint
    return VirtualClock(start, tz)


def _tail(path: str, lines: int = 40) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def _stable_suffix(config: RunConfig) -> str:
    r = random.Random(f"{config.seed}:rundir")
    return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(8))


def _display_pid(config: RunConfig, real: int, offset: int) -> int:
    """Under --start-time every displayed pid is derived from the seed, so
    two runs print the same bytes; otherwise pids are the real ones."""
    if not config.deterministic:
        return real
    return 4000 + config.seed % 50000 + 20 + offset
