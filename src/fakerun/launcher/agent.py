"""The launcher ("agent"): this node's part of a job, torchrun style.

It runs the job (job.py) once, again after a failure while --max-restarts
allows (each attempt continues from the last checkpoint), or, under --loop,
fresh runs until one fails or a signal stops it. Exit codes are torchrun's
(failures.exit_code): 0 success, 1 a rank failed or a stop signal ended the
job (torch elastic's SignalException), 141 when our reader went away. Under
--loop, a screensaver no torchrun has whose way out is Ctrl+C, a stop signal
exits 128+N (130 SIGINT, 143 SIGTERM), as a shell's program killed by it.
"""

from __future__ import annotations

import dataclasses
import gc
import secrets
from typing import TYPE_CHECKING

from fakerun import events as ev
from fakerun.config.options import RunConfig
from fakerun.config.plan import next_run
from fakerun.errors import ExitCode
from fakerun.launcher import build
from fakerun.launcher.edges import IO
from fakerun.launcher.job import LINGER_S, Job
from fakerun.render.kernlog import KernelLog
from fakerun.render.renderer import Renderer, build_renderer
from fakerun.smi import SNAPSHOT_NAME, SmiStateSink
from fakerun.system import heap
from fakerun.system.rundir import RunDir
from fakerun.system.runtime import RuntimeDirError
from fakerun.system.signals import AGENT_SIGNALS, KilledBy, SignalInbox, StopOverdue
from fakerun.system.streams import silence
from fakerun.tensorboard import choice as tensorboard
from fakerun.world.clock import VirtualClock
from fakerun.world.identity import PYTHON

FINISH_MARGIN_S = 5.0  # a stop's grace and linger, then reaping, the last lines, removing the run dir

if TYPE_CHECKING:
    from fakerun.dcgm import DcgmCollector, MetricsServer

__all__ = ["IO", "Launcher"]


class Launcher:
    def __init__(self, config: RunConfig, io: IO | None = None) -> None:
        self.config = config
        self.io = io or IO()
        self.renderer: Renderer | None = None
        self.exit_signal: int | None = None
        self.clock: VirtualClock | None = None  # carried across --loop cycles
        self.metrics: MetricsServer | None = None  # --metrics-port's endpoint, for every cycle
        self.collector: DcgmCollector | None = None  # what it serves: this cycle's

    def run(self) -> int:
        """Run once, or (--loop) fresh runs until one fails or a signal stops us."""
        if self.config.metrics_listen is not None and not self._listen(self.config.metrics_listen):
            return ExitCode.USAGE
        # No system call may outlive a stop signal (a write to a stalled reader):
        grace = self.config.shutdown_grace_s
        self.inbox = SignalInbox(AGENT_SIGNALS, finish_within=grace + max(grace, LINGER_S) + FINISH_MARGIN_S)
        try:
            # One token for every run of a --loop: the other nodes were given it once.
            first = self.config if self.config.token else dataclasses.replace(
                self.config, token=secrets.token_hex(16))
            config, cycle = first, 0
            while True:
                code = self._cycle(config)
                if not config.loop or code != ExitCode.OK or self.exit_signal is not None:
                    return code
                cycle += 1
                config = next_run(first, cycle)
                gc.collect()  # the last run's cyclic garbage, before the next run's ranks fork and copy it
                heap.release_freed()  # and the freed heap glibc would keep (system/heap.py)
        except StopOverdue as exc:  # stuck writing to a reader that stopped reading: the job is torn down
            for stream in (self.io.stdout, self.io.stderr):
                silence(stream)  # so that nothing (closing sinks, the exit's flush) blocks on it again
            return ExitCode.of_signal(exc.signum) if self.config.loop else ExitCode.FAILED
        finally:
            if self.renderer is not None:
                self.renderer.close()
            if self.metrics is not None:
                self.metrics.close()
            self.inbox.close(last_words=True)

    def _cycle(self, config: RunConfig) -> int:
        """One run: its attempts (--max-restarts) share a run dir and a clock."""
        stable = build.stable_suffix(config) if config.deterministic else None
        try:
            RunDir.sweep()
            rundir = RunDir.create(config.run_id, config.log_dir, stable,
                                   ipc=config.agents.node_rank == 0)
        except RuntimeDirError as exc:  # like an unwritable --log-dir: fixed by the user's settings
            self.io.stderr.write(f"fakerun: error: {exc}\n")
            return ExitCode.USAGE
        # The launch configs' log_dir: DefaultLogsSpecs' root (a temporary one unless --log-dir).
        self._renderer(config).formatter.log_root = str(rundir.logs.parent)
        # Attempts and --loop runs go on on one clock, from the first launch.
        self.clock = self.clock or build.run_clock(config, self.io.monotonic)
        self._views(config, rundir)
        try:
            attempt = 0
            while True:
                job = Job(config, self.io, self.inbox, self._renderer(config), self.clock, rundir, attempt,
                          restartable=attempt < config.max_restarts, served=self.metrics)
                code = job.run()
                self.exit_signal, self.clock = job.exit_signal, job.clock
                signum = job.killed_by()
                if signum is not None:  # srun's task dies as its rank did (after the finally clauses)
                    raise KilledBy(signum)
                if not job.restartable_failure():
                    return code
                attempt += 1
                resumed = job.last_checkpoint.step if job.last_checkpoint else 0
                fault = config.fault.next_attempt(resumed) if config.fault is not None else None
                config = dataclasses.replace(config, fault=fault, resume_from=job.last_checkpoint)
                job.view.emit(ev.Restart(attempt, config.max_restarts,
                                         job.last_checkpoint.step if job.last_checkpoint else 0,
                                         self.clock()))
        finally:
            rundir.remove()

    def _views(self, config: RunConfig, rundir: RunDir) -> None:
        """This run's views beyond the console: `fakerun smi`'s state, the
        node's kernel log, the DCGM exporter's collector, the event files."""
        renderer = self._renderer(config)
        if config.agents.node_rank == 0:  # the coordinator's node sees every GPU: `fakerun smi`
            paced = self.clock if config.speed else None  # at a pace its time moves between events
            renderer.attach(SmiStateSink(rundir.private / SNAPSHOT_NAME, PYTHON, run_clock=paced,
                                         fault=config.fault))
        if config.log_dir is not None and config.task in (None, 0):  # one writer a node, srun's tasks too
            renderer.attach(KernelLog(config.log_dir, config.topology.node_rank, renderer.formatter.tz))
        if self.metrics is not None:
            self._collect(config)
        self._tensorboard(config)

    def _tensorboard(self, config: RunConfig) -> None:
        """The event files, on the agent of the rank that writes them (so none is written twice)."""
        board = tensorboard.choose(config.style.name, config.script_args, config.tensorboard,
                                   config.topology.world_size)
        if board is not None and board.rank in config.agents.node_ranks():
            from fakerun.tensorboard.sink import build  # protobuf: only for a run that writes them

            sink = build(board, config.script_args, config.output_dir, config.seed, self.io.environ)
            self._renderer(config).attach(sink)

    def _listen(self, port: int) -> bool:
        """--metrics-port's endpoint, before any rank starts: False (said why) if the port is not ours."""
        from fakerun.dcgm import MetricsServer, PortTaken  # imported only when asked for

        try:
            self.metrics = MetricsServer(self.config.metrics_addr, port, self._scrape, self._wall)
        except PortTaken as exc:
            self.io.stderr.write(f"fakerun: error: {exc}\n")
            return False
        return True

    def _collect(self, config: RunConfig) -> None:
        """This run's exporter: its GPUs from its events, from now."""
        from fakerun.dcgm import DcgmCollector

        assert self.clock is not None
        self.collector = DcgmCollector(config.identity, config.topology.node_rank, config.fault, self.clock(),
                                       run_clock=self.clock if config.speed else None, pod=dict(config.pod),
                                       before=self.collector)
        self._renderer(config).attach(self.collector)

    def _scrape(self) -> bytes:
        return self.collector.body() if self.collector is not None else b""

    def _wall(self) -> float:
        """The Date header: the run's clock, which the logs and nvidia-smi show too."""
        return self.clock() if self.clock is not None else 0.0

    def _renderer(self, config: RunConfig) -> Renderer:
        if self.renderer is None:
            self.renderer = build_renderer(config, self.io.stdout, self.io.stderr, self.io.environ)
        return self.renderer
