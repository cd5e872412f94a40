"""The agent under Slurm (launcher/srun.py): a task's exit is its rank's,
and Slurm's SIGUSR1 kills torchrun's agent but reaches a task's script."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from fakerun.launcher.srun import on_requeue_signal, task_exit
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
    assert on_requeue_signal(SimpleNamespace(task=3), ranks, hub) == []
    assert ranks.sent == [signal.SIGUSR1] and hub.stops == 1  # the rank gets it; training stops at a step
