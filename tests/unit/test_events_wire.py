"""What node 0 relays to the other agents comes back as it went: each
forwarded event survives JSON (which has lists, not tuples)."""

from __future__ import annotations

import json

from fakerun import events as ev


def test_a_checkpoint_that_rotates_older_ones_out_reaches_the_other_nodes():
    """Its `deleted` steps (a tuple) came back a list and were refused: every
    other node counted a "bad-frame" and said so at the end of the run."""
    sent = ev.Checkpoint(4, 1, "out/checkpoint-4", 3, 10, 20, 1.5, 100.0, deleted=(1, 2))
    assert ev.from_dict(json.loads(json.dumps(ev.to_dict(sent)))) == sent
    assert ev.from_dict(json.loads(json.dumps(ev.to_dict(ev.Checkpoint(4, 1, "c", 3, 10, 20, 1.5, 1.0))))).deleted == ()
