"""What the theatre shows: ready-made commands, one pane each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pane:
    title: str  # shown on the pane's top border (a node's host name)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # extra environment; it never reaches any argv


@dataclass(frozen=True)
class Stage:
    nodes: list[Pane]  # node 0 first
    dashboard: Pane  # its exit (the user pressed q) ends the show
    summary: Callable[[int], Pane] | None = None  # given K, a pane summarising nodes K..
    name: str = "fakerun"  # the tmux session name
