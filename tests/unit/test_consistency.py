"""The run tells one story: what the step blocks, the export, the summary,
the cluster box and the ETA say agree with each other and with the run."""

from __future__ import annotations

from datetime import UTC

from fakerun import events as ev
from fakerun.coordinator.timeline import Timeline
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.world import identity
from fakerun.world.clock import VirtualClock


def layout(ident: identity.Identity) -> PytorchLines:
    out = PytorchLines(100, UTC)
    out.routed(ev.RunIdentity(ident))
    return out


def texts(out: PytorchLines, event: object) -> list[str]:
    return [line.text for line in out.lines(event)]


def test_the_output_directory_says_fine_tuned_or_pre_trained():
    scratch = identity.build(1, 1, 8, 20)
    tuned = identity.build(1, 1, 8, 20, asked=identity.Asked(pretrained=True))
    assert Timeline(scratch, VirtualClock(0.0, UTC)).output_dir().endswith("-pretrained/")
    assert Timeline(tuned, VirtualClock(0.0, UTC)).output_dir().endswith("-finetuned/")


def test_the_output_directory_is_said_once():
    ident = identity.build(1, 1, 8, 20)
    out, path = layout(ident), "./models/x-pretrained/"
    export = texts(out, ev.Export(path, ["model-00001-of-00001.safetensors"], 10**9, 1.0, 0.0))
    summary = texts(out, ev.Summary("x", 1, 20, 2.0, 7.4, 2.1, 60.0, 10**6, 1e4, path, 0.0))
    assert sum(path in t for t in export + summary) == 1
