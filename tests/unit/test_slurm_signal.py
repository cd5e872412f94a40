"""The agent under Slurm (launcher/srun.py): a task's exit is its rank's,
and Slurm's SIGUSR1 kills torchrun's agent but reaches a task's script."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from fakerun.launcher.srun import on_requeue_signal, rank_ended, task_exit, task_signal
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


def test_torchrun_s_agent_dies_of_it_and_a_task_s_script_gets_it():
    ranks, hub = Ranks(), Hub()
    with pytest.raises(KilledBy) as killed:
        on_requeue_signal(SimpleNamespace(task=None), ranks, hub)
    assert killed.value.signum == signal.SIGUSR1 and not ranks.sent and not hub.stops
    assert on_requeue_signal(SimpleNamespace(task=3, requeues=False), ranks, hub) == []
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
