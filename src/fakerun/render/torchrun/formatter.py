"""The torchrun dialect: turns events into the lines torchrun, NCCL and the
training script print. Shared by every console view (plain, rich) and by the
per-rank log files, so they never disagree."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import tzinfo
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.events import NCCL_OP_TYPE
from fakerun.render.lines import STDERR, Line, c10_stamp, glog_prefix
from fakerun.render.styles import ScriptRenderer
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.render.torchrun import launch_configs
from fakerun.render.torchrun.failure import failure_box
from fakerun.render.torchrun.nccl import NcclInit
from fakerun.render.torchrun.run_path import poll_traceback
from fakerun.world import physics as sim
from fakerun.world.draws import rng, uniform
from fakerun.world.identity import ENV_PREFIX, PYTHON
from fakerun.world.settings import Settings
from fakerun.world.settings import demo as demo_settings

# Printed as it is (a fidelity issue of its own): a file the package no longer has.
FAKERUN_WHERE = "fakerun/coordinator.py:0"
# The glog letter of a launcher line -> its logging level.
LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR}
# Microseconds from one of a watchdog's c10 log lines to the next on the same
# thread: checkTimeout to watchdogHandler gathers the work's state, the rest
# only format (as in real logs: hiyouga/LlamaFactory#6269, modelscope/DiffSynth-Studio#458).
WATCHDOG_GAPS_US = ((100.0, 300.0), (3.0, 15.0))
# When each process prints a ProcessGroupNCCL warning, in seconds after the
# moment the job reaches it: the ranks reach a barrier within a few tens of
# ms of each other; at exit the interpreter tears down first.
PG_WARNING_LAG_S = {"barrier": (0.0, 0.05), "destroy": (0.05, 0.15)}


@cache
def process_group_texts(torch: str | None) -> dict[str, str]:
    """ProcessGroupNCCL's warnings that torch `torch` prints in a healthy run
    (data/torchrun.toml [process_group_nccl], by major.minor)."""
    table = texts.load("torchrun")["process_group_nccl"]
    return table.get(texts.minor(torch), {})


def _main_thread_id(run: ev.RunStarted) -> int:
    """The launcher's main thread as Python names it (threading.get_ident(),
    glibc's pthread_self: its TCB in the mmap area, 0x7f...740): stable for a
    run and node."""
    seed = run.seed * 1009 + run.node_rank
    return 0x7F0000000000 + (seed * 0x9E3779B1 % 0xFFFFFFF) * 0x1000 + 0x740


def _thread_times(seed: int, rank: int, seq: int, first: float, count: int) -> list[float]:
    """When one rank's watchdog thread logs each of its `count` lines about
    collective `seq`, the first at `first` (WATCHDOG_GAPS_US apart)."""
    times = [first]
    for k in range(1, count):
        lo, hi = WATCHDOG_GAPS_US[0 if k == 1 else 1]
        times.append(times[-1] + (lo + (hi - lo) * uniform(seed, "watchdog-gap", rank, seq, k)) * 1e-6)
    return times


def _addresses(run: ev.RunStarted | None, rank: int) -> dict[str, str]:
    """Per-process library load addresses (ASLR): stable for a run and rank."""
    seed = (run.seed if run else 0) * 1009 + rank
    base = 0x7F0000000000 + (seed * 0x9E3779B1 % 0xFFFFFF) * 0x1000
    offsets = (0x41DF86, 0x171A8D2, 0x1721313, 0x17236FC, 0x1E5AA84, 0x5DD5253, 0x7F76AC3, 0x80B0850)
    return {f"a{i}": f"0x{base + off:x}" for i, off in enumerate(offsets)}


class EventFormatter:
    """Every event's lines, as a job launched by torchrun prints them:
    torchrun's own (launcher, NCCL, failure box) and, for the rest, the
    training script's, in its style's conventions."""

    def __init__(self, width: int = 100, tz: tzinfo | None = None, script: ScriptRenderer | None = None,
                 ident: Any = None, settings: Settings | None = None) -> None:
        """`script`: what renders the training script's own output (the style's;
        default the seeds' layout). `ident`: the run's identity, known before
        the run starts, so that the launcher's first lines already wear its torch's
        file:line (the RunIdentity event brings it too). `settings`: the flags and
        environment that decide what the stack prints (default the demo's)."""
        self.tz = tz
        self.settings = settings or demo_settings()
        self.script = script or PytorchLines(width, tz)
        self.run: ev.RunStarted | None = None
        self.log_root = ""  # the launcher's temporary log dir (its Job says), for the launch configs
        self._use(ident)
        self.pids: dict[int, int] = {}
        self.signal: int | None = None
        self.ended: float | None = None  # the script's last moment (its summary)
        self.now = 0.0
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.RunStarted: self._run_started,
            ev.RunIdentity: self._identity,
            ev.RendezvousComplete: self._rendezvous,
            ev.Phase: self._phase,
            ev.RendezvousTimeout: self._rendezvous_timeout,
            ev.RankOutput: self._rank_output,
            ev.WatchdogTimeout: self._watchdog,
            ev.Rejected: self._rejected,
            ev.OutputFailed: lambda e: [Line(f"fakerun: error: {e.message}", STDERR)],
            ev.AgentError: lambda e: [Line(f"fakerun: error: {e.message}", STDERR)],
            ev.WaitingForNodes: self._waiting,
            ev.NodeLost: self._node_lost,
            ev.ShutdownRequested: self._shutdown,
            ev.ClosingSignal: self._closing,
            ev.ForcedKill: self._forced_kill,
            ev.AttemptFailed: self._attempt_failed,
            ev.NcclSocketClosed: self._socket_closed,
            ev.PortEvent: self._port_event,
            ev.RunFailed: self._run_failed,
            ev.RunFinished: self._run_finished,
        }

    @property
    def binary(self) -> str:
        return PYTHON

    def lines(self, event: ev.Event) -> list[Line]:
        self.now = getattr(event, "time", None) or self.now  # the run's clock, as its events last told it
        handler = self._handlers.get(type(event))
        return handler(event) if handler else self.script.lines(event)

    def _use(self, ident: Any) -> None:
        """Print as the torchrun of `ident`'s torch does."""
        self.ident = ident
        tables = texts.torchrun(ident.versions.torch if ident is not None else None)
        self.where: dict[str, str] = tables["lines"]
        self.frames: dict[str, Any] = tables["frames"]
        self.text: dict[str, Any] = tables["text"]
        self.logger_id: str = tables["logger"]["id"]
        self.pg_text = process_group_texts(ident.versions.torch if ident is not None else None)
        self.follows_loglevel = frozenset(tables["loglevel"]["follows"] + tables["loglevel"]["also"])
        self.failures: dict[str, Any] = tables["failures"]

    # -- launcher lines -------------------------------------------------
    def _launcher(self, level: str, key: str, when: float, message: str) -> list[Line]:
        """A torchrun logging call's lines, if its logger's level lets it
        print (fakerun's own messages, under no torch key, always do)."""
        if key in self.where and not self.settings.logs(LEVELS[level], key in self.follows_loglevel):
            return []
        if key in self.where and not self.settings.torchrun:  # srun started the script: no torchrun to log
            return []
        prefix = glog_prefix(level, when, self._record_id(), self.where.get(key, FAKERUN_WHERE), self.tz)
        return [Line(prefix + part, STDERR) for part in message.split("\n")]

    def _record_id(self) -> int:
        """The number torch._logging prints after the time: the launcher's pid
        (torch 2.5+), or its main thread's id (2.3, 2.4)."""
        if self.run is None:
            return 0
        return _main_thread_id(self.run) if self.logger_id == "thread" else self.run.launcher_pid

    def _run_started(self, e: ev.RunStarted) -> list[Line]:
        self.run = e
        self.script.launched(e)
        first = e.restart_count == 0  # torchrun says these once, not for a restarted worker group
        out = self._info(e.time, "using_nproc", nproc=e.nproc_per_node) if first else []
        if e.nproc_per_node > 1 and e.omp_default and first:
            out += self._launcher("W", "omp_banner", e.time, self.text["omp_banner"])
        if first:
            out += self._launch_configs(e)
            worker = dict(self.settings.launch_configs).get("worker_entrypoint") or PurePosixPath(PYTHON).name
            out += self._info(e.time, "starting_workers", entrypoint=worker)
        return out + self._worker_group(e)

    def _launch_configs(self, e: ev.RunStarted) -> list[Line]:
        """launch_agent's INFO block (LaunchConfig's default NUMA options first)."""
        rows = self.settings.launch_configs
        if not rows:  # a formatter made without a launch line's settings (a test's)
            return []
        out = self._info(e.time, "default_numa") if dict(rows)["default_numa"] else []
        return out + self._info(e.time, "launch_configs", **launch_configs.values(rows, e, self.log_root))

    def _worker_group(self, e: ev.RunStarted) -> list[Line]:
        """LOGLEVEL=INFO: the agent's rendezvous and start of the worker group
        (elastic/agent/server/api.py _rendezvous, _initialize_workers;
        local_elastic_agent.py _start_workers), before any worker prints."""
        if not self.settings.logs(logging.INFO, True):
            return []
        ranks = [e.node_rank * e.nproc_per_node + local for local in range(e.nproc_per_node)]
        handler = dict(self.settings.launch_configs).get("event_log_handler", "null")
        out = self._info(e.time, "rendezvousing")
        out += self._info(e.time, "rendezvous_complete", restart_count=e.restart_count,
                          master_addr=e.master_addr, master_port=e.master_port,
                          group_rank=e.node_rank, group_world_size=e.nnodes,
                          local_ranks=list(range(e.nproc_per_node)), role_ranks=ranks, global_ranks=ranks,
                          role_world_sizes=[e.world_size] * len(ranks),
                          global_world_sizes=[e.world_size] * len(ranks),
                          event_log_handler=handler)
        for key in ("starting_group", "agent_store", "file_timer", "health_check"):
            out += self._info(e.time, key)
        return out

    def _info(self, when: float, key: str, **values: Any) -> list[Line]:
        """An INFO line of torchrun's, as this torch words it (none where it has no such line)."""
        if not self.where.get(key):
            return []
        return self._launcher("I", key, when, self.text[key].format(role=self.settings.role, **values))

    def _identity(self, e: ev.RunIdentity) -> list[Line]:
        self._use(e.identity)
        self.script.lines(e)
        return self.script.banner(self.run.time if self.run else 0.0)

    def _waiting(self, e: ev.WaitingForNodes) -> list[Line]:
        if not self.settings.torchrun:  # srun starts every task itself
            return []
        nodes = ", ".join(str(n) for n in e.missing)
        hint = [f"waiting for node(s) {nodes} to join; on each missing node run:",
                *(f"  {command}" for command in e.commands)]
        return self._launcher("W", "waiting_for_nodes", e.time, "\n".join(hint))

    def _node_lost(self, e: ev.NodeLost) -> list[Line]:
        if not self.settings.torchrun:  # a task of srun's: its ranks' NCCL errors say it, as a script's would
            return []
        if self.run is not None and e.node_rank == self.run.node_rank:
            return []  # our own failure: our ranks and the failure report say it
        who = f"node {e.node_rank}" + (f" ({e.host})" if e.host else "")
        return self._launcher("E", "node_lost", e.time, f"{who} {e.reason}: {e.detail}")

    def _shutdown(self, e: ev.ShutdownRequested) -> list[Line]:
        self.signal = e.signal
        # The script's own handler, if it has one (Lightning's, under srun's one task a rank).
        return self._launcher("W", "death_signal", e.time,
                              self.text["death_signal"].format(signal=e.signal)) + self.script.lines(e)

    def _closing(self, e: ev.ClosingSignal) -> list[Line]:
        if self.settings.run_path_start:  # spawn.py join's SIGTERM to each live spawn child
            return self._launcher("W", "terminating", e.time, self.text["terminating"].format(pid=e.pid))
        return self._launcher("W", "closing_signal", e.time,
                              self.text["closing_signal"].format(pid=e.pid, signal=e.signal))

    def _forced_kill(self, e: ev.ForcedKill) -> list[Line]:
        return self._launcher("W", "forced_kill", e.time,
                              self.text["forced_kill"].format(pid=e.pid, signal=e.signal))

    def _rejected(self, e: ev.Rejected) -> list[Line]:
        message = (f"rejected a message from {e.peer!r}: {e.reason} "
                   "(further rejects of this kind are only counted)")
        return self._launcher("W", "rejected", e.time, message)

    def _rendezvous_timeout(self, e: ev.RendezvousTimeout) -> list[Line]:
        missing = [*map(str, sorted(set(range(e.world_size)) - set(e.joined))),
                   *(f"node {n}'s agent" if self.settings.torchrun else f"task {n}" for n in e.missing_nodes)]
        return self._launcher("E", "rendezvous", e.time, self.text["rendezvous_timeout"].format(
            timeout=f"{e.timeout_s:g}", joined=len(e.joined), world_size=e.world_size,
            missing=", ".join(missing)))

    def _attempt_failed(self, e: ev.AttemptFailed | ev.RunFailed) -> list[Line]:
        root = e.root
        if self.settings.run_path_start:
            trace = poll_traceback(root, self.text, self.frames, self._paths()["site"])
            return self._launcher("E", "failed_fn", e.time, self.text["failed_fn"].format(
                exitcode=root.exitcode, local_rank=root.local_rank, pid=root.pid,
                start_method=self.settings.run_path_start) + "\n" + trace)
        return self._launcher("E", "failed", e.time, self.text["failed"].format(
            exitcode=root.exitcode, local_rank=root.local_rank, pid=root.pid, binary=e.binary))

    def _run_failed(self, e: ev.RunFailed) -> list[Line]:
        if not self.settings.torchrun:  # torchrun's ChildFailedError: a script srun started has none
            return []
        root = e.root
        out = self._attempt_failed(e)
        if root.error_file != "<N/A>":  # torchrun's own @record wrapper, with no file of its own
            out += self._launcher("E", "error_file", e.time + self._error_file_delay(),
                                  self.text["error_file"].format(path=root.error_file))
        else:
            out += self._info(e.time, "no_error_file", rank=root.rank)
        trace = self.text["child_failed"].format(**self._paths(), **self.frames)
        # --run-path: MultiprocessContext._poll reports its one failure, in every version
        # (a torch 2.13 capture: <NO_OTHER_FAILURES>); the after-close reread is the subprocess context's.
        after_close = self.failures["after_close"] and not self.settings.run_path_start
        others = [f for f in e.others if after_close or not f.after_close]
        body = trace.split("\n") + failure_box(e.entrypoint, root, others, self.text, self.tz)
        return out + [Line(text, STDERR) for text in body]

    def _error_file_delay(self) -> float:
        """torchrun's record wrapper logs the child's error file a few ms after
        the failed line (5 ms in a torch 2.13 capture: ChildFailedError raised
        up through launch_agent first); seeded, for byte-identical runs."""
        seed, node = (self.run.seed, self.run.node_rank) if self.run else (0, 0)
        return rng(seed, "error-file-line", node).uniform(0.003, 0.007)

    def _run_finished(self, e: ev.RunFinished) -> list[Line]:
        out: list[Line] = []
        if e.exit_code == 0 and self.ended is not None and self.script.leaves_process_group:
            out += self._process_group_warning("destroy", self.ended)
        if e.exit_code == 0 and self.run is not None:  # _invoke_run's success, then _exit_barrier
            # time.time() - start across a ~1.7e9 s epoch: a multiple of its 2**-22 s step.
            elapsed = rng(self.run.seed, f"exit-barrier-{self.run.node_rank}").randint(600, 1500) * 2.0 ** -22
            for key in ("group_finished", "local_finished", "done_waiting"):
                out += self._info(self.now, key, elapsed=repr(elapsed))
        if e.rejected:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(e.rejected.items()))
            out += self._launcher("W", "rejected", 0.0 if self.run is None else self.run.time,
                                  f"rejected {sum(e.rejected.values())} malformed or "
                                  f"unauthorised messages during the run ({counts})")
        if self.signal is not None and self.run is not None and self.settings.torchrun:
            trace = self.text["signal_exception"].format(
                pid=self.run.launcher_pid, signum=self.signal, **self._paths(), **self.frames)
            out += [Line(text, STDERR) for text in trace.split("\n")]
        return out

    def _paths(self) -> dict[str, str]:
        python = self.ident.versions.python if self.ident else "3.11"
        return {"torchrun": f"{ENV_PREFIX}/bin/torchrun",
                "site": f"{ENV_PREFIX}/lib/python{python}/site-packages"}

    # -- rank lines -----------------------------------------------------
    def _rendezvous(self, e: ev.RendezvousComplete) -> list[Line]:
        self.pids = dict(zip(e.ranks, e.pids, strict=True))
        return []

    def _socket_closed(self, e: ev.NcclSocketClosed) -> list[Line]:
        if self.ident is None:
            return []
        # The communicator's identifiers and threads, as its init lines gave them (seeded: the same again).
        return NcclInit(self.ident, self.pids, self.settings).socket_closed(e.rank, e.peer, e.time, self.tz)

    def _port_event(self, e: ev.PortEvent) -> list[Line]:
        """What the NCCL of each of this node's ranks says of its HCA's port."""
        if self.ident is None:
            return []
        nccl = NcclInit(self.ident, self.pids, self.settings)
        node = self.ident.topology.node_of
        return [line for rank in sorted(self.pids) if node(rank) == e.node_rank
                for line in nccl.port_event(rank, e.gpu, e.active, e.time, self.tz)]

    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "summary":
            self.ended = e.time
        if e.name == "init" and e.stage == "nccl" and self.ident is not None:
            # The first collective creates the communicator (its NCCL lines);
            # a barrier as the first says first which GPU it guessed.
            guessed = self._process_group_warning("barrier", e.time) if self.script.barrier_first else []
            nccl = NcclInit(self.ident, self.pids, self.settings)
            return guessed + nccl.lines(sorted(self.pids)) + self.script.lines(e)
        return self.script.lines(e)

    def _process_group_warning(self, key: str, when: float) -> list[Line]:
        """ProcessGroupNCCL's `key` warning from each rank of this node, each
        process at its own moment after `when` (PG_WARNING_LAG_S)."""
        template = self.pg_text.get(key)
        if template is None or self.ident is None:
            return []
        lo, hi = PG_WARNING_LAG_S[key]
        out = []
        for rank in sorted(self.pids):
            at = when + lo + (hi - lo) * uniform(self.ident.seed, "pg-warning", key, rank)
            text = template.format(stamp=c10_stamp(at, self.tz), rank=rank, device=rank % self.ident.nproc)
            out.append(Line(f"[rank{rank}]:{text}", STDERR, rank))
        return out

    def _rank_output(self, e: ev.RankOutput) -> list[Line]:
        return [Line(text, e.stream, e.rank) for text in e.lines]

    def _watchdog(self, e: ev.WatchdogTimeout) -> list[Line]:
        """Each waiting rank's watchdog thread, on its own clock: it notices
        the timeout within its poll (so its `ran for` and its stamps are its
        own), then logs line after line."""
        work = self.text["work_nccl"].format(
            seq=e.seq, op_type=NCCL_OP_TYPE.get(e.op, e.op.upper()), numel=e.numel,
            timeout_ms=e.timeout_ms)
        out = []
        for rank in e.waiting:
            seed = self.run.seed if self.run else 0
            lag = sim.watchdog_lag(seed, rank, e.seq)
            stamps = [c10_stamp(when, self.tz) for when in
                      _thread_times(seed, rank, e.seq, e.time + lag, len(self.text["watchdog"]) + 1)]
            elapsed_ms = e.elapsed_ms + round(lag * 1000)
            for template, stamp in zip(self.text["watchdog"], stamps, strict=False):
                text = template.format(stamp=stamp, rank=rank, work=work, seq=e.seq,
                                       elapsed_ms=elapsed_ms, last_done=e.seq - 1)
                out.append(Line(f"[rank{rank}]:{text}", STDERR, rank))
            tail = self._watchdog_tail(rank, stamps[-1], work, elapsed_ms)
            out += [Line(text, STDERR, rank) for text in tail]
        return out

    def _watchdog_tail(self, rank: int, stamp: str, work: str, elapsed_ms: int) -> list[str]:
        """The thread's exception with its C++ frames, then std::terminate."""
        amd = self.ident is not None and self.ident.gpu.vendor == "amd"
        values = {"rank": rank, "stamp": stamp, "work": work, "elapsed_ms": elapsed_ms,
                  "lib": f"{self._paths()['site']}/torch/lib", **_addresses(self.run, rank),
                  "gpu_lib": "libtorch_hip.so" if amd else "libtorch_cuda.so"}  # ROCm's wheel: libtorch_hip
        frames = "\n".join(t.format(**values) for t in self.text["check_timeout_frames"])
        text = "\n".join(t.format(frames=frames, **values) for t in self.text["watchdog_tail"])
        return text.split("\n")
