"""The JSONL line of a `collective` event: its shortcut writes exactly what
the general path (to_dict + json.dumps) writes."""

from __future__ import annotations

import json

import pytest

from fakerun import events as ev
from fakerun.render import jsonl


def general(event: ev.Collective) -> str:
    return json.dumps(ev.to_dict(event), allow_nan=False, separators=(",", ":"))


def test_the_shortcut_is_in_use():
    # False would mean the event's fields changed: the general path (slower) runs.
    assert jsonl._COLLECTIVE_SHAPE
    event = ev.Collective("world", "all_reduce", 7, 2, "float32", [0, 1], 12, "train_step", 2, 3, 0)
    assert jsonl._collective_line(event) == general(event)


@pytest.mark.parametrize("event", [
    ev.Collective("world", "all_reduce", 17, 2, "float32", list(range(8)), 123, "bench", 2, 456, 0),
    ev.Collective('w"\\\u00f6\u2028\n', "barrier", 0, 0, "f", [], 0, "", 0, None, 5),
    ev.Collective("w", "op", True, 0, "f", [1], 0, "t", 0, 5, 0),  # a bool where an int belongs
    ev.Collective("w", "op", 1, 0, "f", [True, 2], 0, "t", 0, 5, 0),
    ev.Collective("w", "op", 1, 0, "f", (1, 2), 0, "t", 0, 5, 0),  # type: ignore[arg-type]
    ev.Collective("w", "op", 1, 0, "f", [1], 0, "t", 1 << 70, -1, 0),
])
def test_collective_lines_match_the_general_path(event):
    assert jsonl.dumps(event) == general(event)
