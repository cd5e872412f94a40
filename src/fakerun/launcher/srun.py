"""Slurm, as the agent meets it: srun's one task per rank (cli/slurm.py),
where the process srun started is the training script itself with no
torchrun around it, and Slurm's SIGUSR1 before a job's time limit.

Under one task a rank the agent runs its task's one rank; what srun reports
for the task is that rank's exit, not torchrun's (torchrun exits 1 whatever
its worker did)."""

from __future__ import annotations

from collections.abc import Iterable

from fakerun import events as ev
from fakerun import failures
from fakerun.config.options import RunConfig
from fakerun.errors import ExitCode
from fakerun.launcher.links import Hub
from fakerun.launcher.supervisor import Supervisor, Workers
from fakerun.system.signals import REQUEUE_SIGNAL, STOP_SIGNALS, KilledBy


def rank_ended(config: RunConfig, stop_reason: str | None, sup: Supervisor | None) -> list[int] | None:
    """Under one task a rank, when its rank failed or a stop signal ended
    it: the exit codes of the task's rank, which the task's own exit then
    follows. None otherwise (success, or fakerun's own reasons to stop: a
    rendezvous timeout, an address it cannot use, a file it cannot write,
    a reader gone, which keep the launcher's exit)."""
    if config.task is None or sup is None or stop_reason not in (None, "failure", "signal"):
        return None
    if failures.exit_code(stop_reason, bool(sup.failures)) != ExitCode.FAILED:
        return None
    return [f.exitcode for f in sup.failures] + [e.exitcode for e in sup.exited_ok]


def task_exit(exitcodes: Iterable[int]) -> int:
    """The task's exit status as its one rank left it (`exitcodes`: the
    rank's, as the supervisor reaped it): its code, or 128+N for a rank a
    signal ended (a shell's way of writing it: what the job's run_finished
    says; the task itself then dies of that signal, Launcher._cycle)."""
    code = next(iter(exitcodes), None)
    if code is None:  # never reaped: it did not start
        return ExitCode.FAILED
    return ExitCode.of_signal(-code) if code < 0 else code


def task_signal(exitcodes: Iterable[int]) -> int | None:
    """The signal that ended the task's rank, if one did."""
    code = next(iter(exitcodes), None)
    return -code if code is not None and code < 0 else None


def agent_handles_requeue(config: RunConfig) -> bool:
    """Whether torchrun's agent handles Slurm's SIGUSR1: --signals-to-handle
    (torch 2.13's option, which fakerun takes whatever torch the run claims,
    cli/launch_options.py) names it. torch 2.13's PContext.start registers
    _terminate_process_handler for each name of TORCHELASTIC_SIGNALS_TO_HANDLE,
    stripped and looked up as `getattr(signal, name.strip())` (a name it
    cannot find only warns); the handler raises SignalException as for
    SIGTERM: the agent's run() logs "Received 10 death signal, shutting down
    workers", _shutdown(e.sigval) closes the workers with SIGUSR1 itself, and
    the exception goes uncaught out of torchrun's main
    (elastic/multiprocessing/api.py, elastic/agent/server/api.py,
    launcher/api.py at v2.13.0)."""
    if config.task is not None:  # srun's task: no torchrun, the script itself gets it
        return False
    return REQUEUE_SIGNAL.name in {name.strip() for name in config.launch.signals_to_handle.split(",")}


def stop_signals(config: RunConfig) -> tuple[int, ...]:
    """The signals that end the job as the agent's handled ones do."""
    return (*STOP_SIGNALS, REQUEUE_SIGNAL) if agent_handles_requeue(config) else STOP_SIGNALS


def on_requeue_signal(config: RunConfig, ranks: Workers, hub: Hub) -> list[ev.Event]:
    """Slurm's warning before the time limit (--signal=USR1@T). torchrun
    takes no SIGUSR1 (elastic/multiprocessing/api.py handles SIGTERM, SIGINT,
    SIGHUP and SIGQUIT, torch 2.3.1 to 2.9.1; pytorch/pytorch#154849): its
    agent dies of it at once, saying nothing, and Slurm ends the step's
    workers with it (KilledBy: the launcher cleans up, then dies by it),
    unless torch 2.13's option told it to handle it (agent_handles_requeue: the
    launcher then stops the job as for its other stop signals). A task srun
    started is the script itself, which gets the signal (its rank, here);
    the job then stops training at the next step, and the script does what
    rank/training.py says. Lightning's auto-requeue saves and trains on (its
    handler returns): the job is not stopped, Slurm's SIGTERM ends it."""
    if agent_handles_requeue(config):
        return []
    if config.task is None:
        raise KilledBy(REQUEUE_SIGNAL)
    ranks.send(REQUEUE_SIGNAL)
    return [] if config.requeues else hub.request_stop()
