"""Slurm's SIGTERM to a Lightning script after its auto-requeue (scontrol
requeue ends the job at once): the lines of _SignalConnector's SIGTERM
handlers (Lightning-AI/pytorch-lightning 2.4.0 to 2.6.5,
src/lightning/pytorch/trainer/connectors/signal_connector.py
_sigterm_notifier_fn, _sigterm_handler_fn), set as fit starts."""

from __future__ import annotations

import signal

from fakerun import events as ev
from fakerun.render.lines import STDERR
from fakerun.render.styles.lightning import LightningLines
from fakerun.world import identity, styles

SIGTERM = ev.ShutdownRequested(int(signal.SIGTERM), 300.0)


def _renderer(job: str | None) -> LightningLines:
    """A Lightning script on 2 nodes of 2 GPUs (local ranks 0, 1, 0, 1)."""
    (pinned,) = styles.parse("lightning").versions()
    ident = identity.build(5, 2, 2, total_steps=40, model="Qwen2.5-1.5B", gpu="NVIDIA H100 80GB HBM3",
                           versions=pinned)
    r = LightningLines(100, None)
    r.lines(ev.RunIdentity(ident))
    r.launched(ev.RunStarted("r", 4, 2, 2, 0, 5, "train.py", [], 4, "h", 1, 1, 0, 0.0, requeue_job=job))
    r.banner(0.0)
    r.lines(ev.Phase("init", "dataset", 0, 1.0))
    return r


def _step(step: int, stopped: bool = False) -> ev.Step:
    return ev.Step(step, 40, 5.0, 9.0, 11.0, 1e-4, epoch=1, time=100.0 + step, step_time_s=1.0, stopped=stopped)


def test_every_rank_logs_its_local_rank_then_bypasses_it():
    r = _renderer("4242")
    r.lines(ev.Phase("train", "", 0, 10.0))
    said = r.lines(SIGTERM)
    expected = [(f"[rank: {local}] Received SIGTERM: 15", "Bypassing SIGTERM: 15") for local in (0, 1, 0, 1)]
    assert [line.text for line in said] == [text for pair in expected for text in pair]
    assert [line.rank for line in said] == [0, 0, 1, 1, 2, 2, 3, 3] and {line.stream for line in said} == {STDERR}


def test_the_stop_at_the_next_batch_is_not_the_timer_s():
    r = _renderer("4242")
    r.lines(ev.Phase("train", "", 0, 10.0))
    r.lines(SIGTERM)
    assert not [line for line in r.lines(_step(3, stopped=True)) if "Time limit" in line.text]


def test_no_handler_yet_or_any_more_or_another_signal_says_nothing():
    assert _renderer("4242").lines(SIGTERM) == []  # before fit: the script dies of it
    r = _renderer("4242")
    r.lines(ev.Phase("train", "", 0, 10.0))
    r.lines(ev.Phase("export", "", 40, 200.0))
    assert r.lines(SIGTERM) == []  # fit's teardown restored the handlers it found
    r = _renderer("4242")
    r.lines(ev.Phase("train", "", 0, 10.0))
    assert r.lines(ev.ShutdownRequested(int(signal.SIGINT), 300.0)) == []
