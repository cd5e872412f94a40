"""The rank process: one simulated GPU worker, forked by the launcher.

It detaches like a torchrun worker (own session), dies with its parent,
rendezvous with the coordinator and runs the simulated training loop. It never
prints to the user: its structured results go over the wire, and its own
stdout/stderr are the per-rank log files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

import zmq

from fakerun import failures
from fakerun.config.launch import RUN_PATH
from fakerun.config.options import RunConfig
from fakerun.errors import ExitCode
from fakerun.protocol.messages import Hello
from fakerun.rank import title
from fakerun.rank.communicator import CollectiveAborted, CommError, Communicator, ParentGone
from fakerun.rank.faults import (
    ScriptFailed,
    ScriptInterrupted,
    SimulatedExit,
    SimulatedSignal,
    peer_lost,
    script_text,
)
from fakerun.rank.training import Script
from fakerun.system.signals import AGENT_SIGNALS, die_by

PR_SET_PDEATHSIG = 1
FORK_BLOCKED = set(AGENT_SIGNALS)  # the launcher's: the child resets each before it unblocks them
# The launcher times the rendezvous out and says so; a rank's own wait, begun
# before the launcher's clock started, must not end first (it did, under
# load: the job failed as a rank's error instead of a rendezvous timeout).
RDZV_MARGIN_S = 5.0


@dataclass(frozen=True)
class RankSpec:
    rank: int
    local_rank: int
    node_rank: int
    endpoint: str
    token: str
    run_id: str
    env: dict[str, str]
    parent_pid: int
    stdout_path: str
    stderr_path: str
    display_pid: int  # the pid the run shows (a stable one when --start-time fixes the output)


def run_child(spec: RankSpec, config: RunConfig, mask: set[signal.Signals]) -> NoReturn:
    """Entry point in the forked child (signals in FORK_BLOCKED arrive
    blocked; `mask` is the mask to restore); never returns."""
    code = ExitCode.INTERNAL
    try:
        argv = title.command(config.entrypoint, config.script_args, None, config.launch, spec.local_rank)
        _detach(spec, argv)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        code = _main(spec, config)
    except BaseException:  # noqa: BLE001 - last resort: report, never unwind into the launcher
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(ExitCode.INTERNAL)
    os._exit(code)


def _detach(spec: RankSpec, argv: list[str]) -> None:
    """`argv`: the command line a real worker has, which `ps` shows."""
    os.setsid()  # torchrun starts workers with start_new_session=True
    _batch_scheduling()
    signal.set_wakeup_fd(-1)
    # SIGINT too, until the script runs (_run_script: then a KeyboardInterrupt,
    # once). SIGQUIT kills it (-3) without a core: RLIMIT_CORE is 0 below.
    for sig in FORK_BLOCKED:
        signal.signal(sig, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != spec.parent_pid:  # the launcher died before prctl took effect
        os._exit(1)
    title.show(argv, libc)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a simulated abort must not drop cores
    _redirect(spec)
    os.environ.update(spec.env)


def _batch_scheduling() -> None:
    """SCHED_BATCH (sched(7)): a waking rank does not preempt whatever runs,
    which on a small machine is mostly the coordinator in the middle of a
    collective. Each release wakes every rank at once: preempted by them,
    the coordinator's thread switched 3.2 times per collective (1.1 with
    batch ranks) and the round trip cost a tenth more. Threads started later
    (zmq's I/O thread) inherit the policy. Unprivileged; where refused,
    nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _redirect(spec: RankSpec) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, spec.stdout_path), (2, spec.stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.closerange(3, 65536)  # the launcher's sockets and files are not ours
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _main(spec: RankSpec, config: RunConfig) -> int:
    ctx = zmq.Context()
    comm = Communicator(ctx, spec.endpoint, spec.rank, spec.parent_pid, spec.token)
    try:
        return _session(comm, spec, config)
    finally:
        comm.close()
        ctx.destroy(linger=0)


def _session(comm: Communicator, spec: RankSpec, config: RunConfig) -> int:
    try:
        comm.hello(Hello(spec.rank, spec.local_rank, spec.node_rank, spec.display_pid or os.getpid(),
                         spec.run_id, spec.token, spec.env), config.rdzv_timeout_s + RDZV_MARGIN_S)
        _run_script(comm, spec, config)
    except ScriptInterrupted as exc:  # torchrun's closing signal SIGINT, as the script takes it
        _report(comm, spec.rank, script_text(config, exc.key).split("\n"), "stderr", -signal.SIGINT,
                record=False)
        die_by(signal.SIGINT)  # as CPython ends on an uncaught KeyboardInterrupt
    except ParentGone:
        return 1
    except CollectiveAborted as exc:
        if exc.abort.cause == "watchdog":
            die_by(signal.SIGABRT)  # ProcessGroupNCCL tears the process down
        if exc.abort.cause == "peer":
            return _report(comm, spec.rank, peer_lost(config, exc.abort.detail, spec.rank), "stderr", 1,
                           hooked=_hooked(config))
        return _fail(comm, spec.rank, RuntimeError(exc.abort.detail), _hooked(config))
    except SimulatedExit as exc:
        comm.goodbye(exc.code, "exit")
        return exc.code
    except SimulatedSignal as exc:
        if exc.lines:  # what native code wrote before the signal: delivered, then no Python exit
            comm.output("stderr", exc.lines)
            comm.goodbye(-exc.sig, "signal")
        die_by(exc.sig)
    except ScriptFailed as exc:
        return _report(comm, spec.rank, exc.lines, exc.stream, exc.code, hooked=_hooked(config))
    except CommError as exc:
        print(f"[rank{spec.rank}]: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the "training script" raised
        return _fail(comm, spec.rank, exc, _hooked(config))
    comm.goodbye(0)
    return 0


def _run_script(comm: Communicator, spec: RankSpec, config: RunConfig) -> None:
    """The training script, with Python's own SIGINT: a KeyboardInterrupt
    where the script is (a collective's wait, a pacing sleep), so that the
    rank stops at once. One only: a second SIGINT while the first unwinds
    is ignored, and so is one after the script's end, the rank's way out."""
    script = Script(comm, spec.rank, config, config.identity)
    try:
        try:
            signal.signal(signal.SIGINT, _keyboard_interrupt)
            script.run()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:  # also one landing in the finally above: it must not escape as our own error
        raise ScriptInterrupted(script.where) from None


def _keyboard_interrupt(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _fail(comm: Communicator, rank: int, exc: BaseException, hooked: bool) -> int:
    """Report an uncaught exception as torch's excepthook would, exit 1."""
    text = "".join(traceback.format_exception(exc)).rstrip("\n")
    return _report(comm, rank, text.split("\n"), "stderr", 1, hooked=hooked)


def _hooked(config: RunConfig) -> bool:
    """Whether an exception the script raises reaches the excepthook. Not a
    --run-path worker's: torch/multiprocessing/spawn.py's _wrap catches it
    and sends it to the launcher (as a torch 2.13 torchrun --run-path capture
    shows: nothing on the worker's stderr; render/torchrun/run_path.py)."""
    return config.launch.how != RUN_PATH


def _report(comm: Communicator, rank: int, lines: list[str], stream: str, code: int,
            record: bool = True, hooked: bool = True) -> int:
    """The script's last words, then exit `code`. A traceback on stderr gets
    torch's `[rankN]: ` excepthook prefix (not on empty lines: torch's
    distributed_c10d.py _distributed_excepthook, v2.3.1 on), and, with
    `record` (an Exception: what @record writes), @record's error file."""
    if stream == "stderr":
        if record:
            failures.write_record(lines, comm.now)
        lines = [f"[rank{rank}]: {line}" if line else line for line in lines] if hooked else []
    if lines:
        comm.output(stream, lines)
    if not comm.goodbye(code, "exception") and lines:
        print("\n".join(lines), file=sys.stderr if stream == "stderr" else sys.stdout)
    return code
