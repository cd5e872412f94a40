"""Jokes only where nobody could take the run for a real job: always with
--funny, rarely in the screen-saver --loop and the theatre on a terminal,
never in a drop-in launch, a pipe, JSONL or a hand-launched multi-node job.
Checked through the world model (cli.main.joke_rate -> identity.build ->
every text that names the model), over a thousand seeds."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from fakerun import texts
from fakerun.cli import main
from fakerun.cli.parser import build_parser
from fakerun.render.styles.megatron_args import Cadence, Shapes, arguments
from fakerun.world import catalog, identity

SEEDS = range(1000)
JOKES = {row.name for rows in (catalog.models(), catalog.datasets(), catalog.gpus())
         for row in rows if row.kind == "funny"}
# A joke model's name also reaches output as a slug (checkpoints/bonzibuddy-gpt-1-5b).
JOKE_TEXT = re.compile("|".join(re.escape(t) for name in JOKES
                                for t in {name.lower(), re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")}))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def rate(monkeypatch: pytest.MonkeyPatch, argv: list[str], terminal: bool = True, theatre: bool = False,
         torchrun: bool = False) -> float:
    monkeypatch.setattr("sys.stdout", Terminal() if terminal else io.StringIO())
    monkeypatch.setattr("sys.argv", ["torchrun" if torchrun else "fakerun"])
    ns = build_parser().parse_args(argv)
    drop_in = ns.training_script is not None or main.invoked_as_torchrun()
    return main.joke_rate(ns, drop_in, ns.nnodes in (None, 1), theatre)


def named(ident: identity.Identity) -> str:
    """Every text of the run that names its model, data or GPU: the identity
    itself and what Megatron derives from it (tokenizer and save paths)."""
    shapes = Shapes.of(ident, texts.load("style-megatron"))
    return f"{ident!r} {arguments(ident, shapes, Cadence.of(ident.hyper, False), {})!r}".lower()


def build(seed: int, jokes: float) -> identity.Identity:
    return identity.build(seed, 1, (1, 2, 8)[seed % 3], 10, jokes=jokes)


UNASKED: dict[str, dict[str, Any]] = {
    "the demo": {"argv": ["--nproc", "8"]},
    "the demo, once, on a terminal": {"argv": ["--nproc", "1"]},
    "--loop into a pipe": {"argv": ["--loop"], "terminal": False},
    "--loop as JSONL": {"argv": ["--loop", "--output", "jsonl"]},
    "a drop-in --loop (a script named)": {"argv": ["--loop", "train.py", "--lr", "1e-4"]},
    "a drop-in --loop (run as torchrun)": {"argv": ["--loop"], "torchrun": True},
    "a hand-launched node of a --loop": {"argv": ["--loop", "--nnodes", "2", "--node-rank", "0"]},
    "--loop with a metrics file": {"argv": ["--loop", "--metrics-file", "m.jsonl"]},
    "--loop with rank logs": {"argv": ["--loop", "--log-dir", "logs"]},
    "--loop with checkpoints": {"argv": ["--loop", "--output-dir", "out"]},
    "the theatre's agents told so": {"argv": ["--jokes", "0"], "theatre": True},
}


@pytest.mark.parametrize("launch", sorted(UNASKED))
def test_a_launch_that_does_not_ask_gets_no_jokes(monkeypatch, launch):
    assert rate(monkeypatch, **UNASKED[launch]) == identity.JOKES_NEVER


def test_no_joke_name_unless_asked():
    leaked = [seed for seed in SEEDS if JOKE_TEXT.search(named(build(seed, identity.JOKES_NEVER)))]
    assert not leaked, f"seeds {leaked[:10]} name a joke"


def test_funny_asks_for_jokes_anywhere(monkeypatch):
    assert rate(monkeypatch, ["--funny", "train.py"], terminal=False) == identity.JOKES_ALWAYS  # even a drop-in
    for seed in SEEDS:
        ident = build(seed, identity.JOKES_ALWAYS)
        assert (ident.model.kind, ident.dataset.kind) == ("funny", "funny"), seed


@pytest.mark.parametrize("argv,theatre", [(["--loop"], False), (["--loop", "--log-dir", "/dev/null"], False),
                                          (["--nodes", "2"], True),
                                          (["--nodes", "2", "--loop"], True)])
def test_the_screen_saver_and_the_theatre_may_joke(monkeypatch, argv, theatre):
    assert rate(monkeypatch, argv, theatre=theatre) == identity.JOKES_RARE


def test_rarely():
    funny = sum(bool(JOKE_TEXT.search(named(build(seed, identity.JOKES_RARE)))) for seed in SEEDS)
    assert 30 <= funny <= 150, funny  # about one run in eleven: some, never most


def test_the_rate_changes_no_other_draw():
    """A joke replaces the model or the data; the rest of a seed's run stays
    (the coin is tossed at every rate)."""
    for seed in range(200):
        plain, rare = build(seed, identity.JOKES_NEVER), build(seed, identity.JOKES_RARE)
        if (plain.model, plain.dataset, plain.gpu) == (rare.model, rare.dataset, rare.gpu):
            assert plain == rare, seed
