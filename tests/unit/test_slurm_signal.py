"""The agent under Slurm (launcher/srun.py): a task's exit is its rank's,
and Slurm's SIGUSR1 kills torchrun's agent but reaches a task's script."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from fakerun.launcher.srun import (
    agent_handles_requeue,
    on_requeue_signal,
    rank_ended,
    stop_signals,
    task_exit,
    task_signal,
)
from fakerun.system.signals import KilledBy


@pytest.mark.parametrize("codes,status", [([0], 0), ([1], 1), ([-11], 139), ([-6], 134), ([], 1)])
def test_a_task_exits_as_its_rank_did(codes, status):
    assert task_exit(codes) == status


class Ranks:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, sig: int, workers: object = None) -> list:
        self.sent.append(sig)
        return []


class Hub:
    stops = 0

    def request_stop(self) -> list:
        self.stops += 1
        return []


def config(task: int | None, handled: str = "SIGTERM,SIGINT,SIGHUP,SIGQUIT") -> SimpleNamespace:
    return SimpleNamespace(task=task, requeues=False, launch=SimpleNamespace(signals_to_handle=handled))


def test_torchrun_s_agent_dies_of_it_and_a_task_s_script_gets_it():
    ranks, hub = Ranks(), Hub()
    with pytest.raises(KilledBy) as killed:
        on_requeue_signal(config(None), ranks, hub)
    assert killed.value.signum == signal.SIGUSR1 and not ranks.sent and not hub.stops
    assert on_requeue_signal(config(3), ranks, hub) == []
    assert ranks.sent == [signal.SIGUSR1] and hub.stops == 1  # the rank gets it; training stops at a step


def test_lightning_s_auto_requeue_gets_it_and_trains_on():
    """SLURMEnvironment's handler returns: the job is not stopped (rank/training.py saves and goes on)."""
    ranks, hub = Ranks(), Hub()
    assert on_requeue_signal(SimpleNamespace(task=0, requeues=True), ranks, hub) == []
    assert ranks.sent == [signal.SIGUSR1] and hub.stops == 0


def test_a_task_dies_of_what_killed_its_rank_but_not_of_fakerun_s_own_stops():
    """srun reports "task 1: Segmentation fault" for a script a signal
    killed: the task dies of its rank's signal. A stop fakerun itself made
    (a rendezvous timeout, an address it cannot use) keeps exit 1."""
    task = SimpleNamespace(task=1)
    segv = SimpleNamespace(failures=[SimpleNamespace(exitcode=-signal.SIGSEGV)], exited_ok=[])
    assert rank_ended(task, None, segv) == [-signal.SIGSEGV] and task_signal([-signal.SIGSEGV]) == signal.SIGSEGV
    assert rank_ended(task, "rendezvous", segv) is None and rank_ended(task, "error", segv) is None
    assert rank_ended(SimpleNamespace(task=None), None, segv) is None  # torchrun's way: torchrun exits 1
    clean = SimpleNamespace(failures=[], exited_ok=[SimpleNamespace(exitcode=0)])
    assert rank_ended(task, None, clean) is None  # a success
    assert rank_ended(task, "signal", clean) == [0] and task_signal([0]) is None  # it saved and left: 0


@pytest.mark.parametrize(("handled", "takes"), [
    ("SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", True),
    ("SIGTERM, SIGUSR1 ", True),  # each name stripped (api.py at v2.13.0: sig_name.strip())
    ("SIGTERM,SIGINT,SIGHUP,SIGQUIT", False),  # the default list
    ("SIGTERM,USR1", False),  # getattr(signal, "USR1") fails: a warning, no handler
])
def test_torch_2_13_s_agent_handles_it_when_told_to(handled, takes):
    """--signals-to-handle naming SIGUSR1 (torch 2.13's TORCHELASTIC_SIGNALS_TO_HANDLE):
    the agent's handler raises SignalException for it as for SIGTERM, and it
    shuts the workers down with that signal: the launcher's stop path, not death."""
    ranks, hub = Ranks(), Hub()
    run = config(None, handled)
    assert agent_handles_requeue(run) is takes
    assert (signal.SIGUSR1 in stop_signals(run)) is takes
    assert set(stop_signals(run)) >= {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
    if takes:
        assert on_requeue_signal(run, ranks, hub) == [] and not ranks.sent and not hub.stops
    else:
        with pytest.raises(KilledBy):
            on_requeue_signal(run, ranks, hub)
    task = config(2, handled)  # srun's task has no agent: its script gets the signal
    assert not agent_handles_requeue(task) and signal.SIGUSR1 not in stop_signals(task)
