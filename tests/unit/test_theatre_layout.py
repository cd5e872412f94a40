"""The theatre's layout: pure geometry and tmux's layout string."""

from __future__ import annotations

import pytest

from fakerun.theatre.layout import (
    DASHBOARD,
    NODE_COLS,
    NODE_ROWS,
    SUMMARY,
    Size,
    checksum,
    layout_string,
    plan,
    share,
)


def test_checksum_matches_tmux():
    body = "200x50,0,0{100x50,0,0,0,99x50,101,0[99x25,101,0,1,99x24,101,26,2]}"  # from tmux 3.3a
    assert f"{checksum(body):04x}" == "21be"


def test_share_fills_the_total():
    assert share(24, 3) == [8, 8, 8]
    assert share(33, 2) == [17, 16]


@pytest.mark.parametrize("size", [Size(80, 24), Size(200, 50), Size(120, 40), Size(200, 24), Size(60, 18)])
@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 8, 9, 16, 64])
def test_every_plan_fills_the_terminal_and_keeps_node_panes_readable(size, nodes):
    p = plan(nodes, size)
    assert sum(row.height for row in p.rows) == size.rows
    assert p.rows[-1].slots == (DASHBOARD,) and p.rows[-1].height - 1 >= 6
    assert 1 <= p.shown <= nodes
    assert [s for s in p.slots if isinstance(s, int)] == list(range(p.shown))  # node 0 first, in order
    assert p.summarised == (p.shown < nodes and size.rows >= 22)  # 60x18 has no room for it
    for row in p.rows:
        if any(isinstance(s, int) for s in row.slots):
            assert row.height - 1 >= NODE_ROWS
            assert (size.cols - (len(row.slots) - 1)) // len(row.slots) >= NODE_COLS


def test_the_two_reference_terminals():
    assert [r.slots for r in plan(2, Size(80, 24)).rows] == [(0,), (SUMMARY,), (DASHBOARD,)]
    assert [r.slots for r in plan(2, Size(200, 50)).rows] == [(0, 1), (DASHBOARD,)]
    assert [r.slots for r in plan(4, Size(200, 50)).rows] == [(0, 1), (2, 3), (DASHBOARD,)]
    assert [r.slots for r in plan(16, Size(200, 50)).rows][-2:] == [(6, 7, SUMMARY), (DASHBOARD,)]
    assert plan(16, Size(200, 50), summary=False).shown == 9


def test_layout_string():
    p = plan(2, Size(200, 50))
    text = layout_string(p, {0: 1, 1: 2, DASHBOARD: 3})
    body = "200x50,0,0[200x33,0,0{100x33,0,0,1,99x33,101,0,2},200x16,0,34,3]"
    assert text == f"{checksum(body):04x},{body}"
