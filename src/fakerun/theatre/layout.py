"""Where each pane goes: a pure function of the terminal size and the node
count, and the tmux custom-layout string that puts the panes there.

A plan is a stack of rows, top to bottom: the node grid, then (only on a
terminal too narrow for two grid slots) a one-line-high summary strip, then
the dashboard. Each row's height counts its title line: with
pane-border-status top a pane costs its content rows plus one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NODE_COLS, NODE_ROWS = 60, 10  # the least a node agent's view stays readable in
DASH_ROWS = 6  # the dashboard's least; it takes a third of a taller terminal
SUMMARY_ROWS = 3
SUMMARY, DASHBOARD = "summary", "dashboard"
Slot = int | str  # a node's index, SUMMARY or DASHBOARD


@dataclass(frozen=True)
class Size:
    cols: int
    rows: int


# One node pane above the dashboard: smaller than this, the theatre declines.
MIN_SIZE = Size(NODE_COLS, NODE_ROWS + 1 + DASH_ROWS + 1)


@dataclass(frozen=True)
class Row:
    height: int  # rows on screen, the panes' title line included
    slots: tuple[Slot, ...]  # left to right


@dataclass(frozen=True)
class Plan:
    size: Size
    rows: tuple[Row, ...]

    @property
    def slots(self) -> list[Slot]:
        return [slot for row in self.rows for slot in row.slots]

    @property
    def shown(self) -> int:
        """Node panes on screen: nodes 0..shown-1; the others run out of sight."""
        return sum(1 for slot in self.slots if isinstance(slot, int))

    @property
    def summarised(self) -> bool:
        return SUMMARY in self.slots


def plan(nodes: int, size: Size, summary: bool = True) -> Plan:
    """Every node if they fit at NODE_COLS x NODE_ROWS; else as many as fit
    less one, and a summary pane (of the rest) in the last grid slot. Nodes
    not shown still run, out of sight."""
    columns = max(1, (size.cols + 1) // (NODE_COLS + 1))
    dash = max(DASH_ROWS, size.rows // 3) + 1
    fits = columns * _grid_rows(size.rows - dash)
    if nodes <= fits or not summary:
        return _arrange(size, list(range(min(nodes, fits))), columns, [Row(dash, (DASHBOARD,))])
    if fits >= 2:
        return _arrange(size, [*range(fits - 1), SUMMARY], columns, [Row(dash, (DASHBOARD,))])
    # One slot only (a narrow, short terminal): node 0 keeps it, the summary
    # becomes a strip if there is room, and the dashboard gives up rows for it.
    strip = SUMMARY_ROWS + 1
    room = size.rows - (NODE_ROWS + 1) - strip
    if room < DASH_ROWS + 1:
        return _arrange(size, [0], 1, [Row(dash, (DASHBOARD,))])
    return _arrange(size, [0], 1, [Row(strip, (SUMMARY,)), Row(min(dash, room), (DASHBOARD,))])


def _grid_rows(height: int) -> int:
    return max(1, height // (NODE_ROWS + 1))


def _arrange(size: Size, grid: list[Slot], columns: int, bottom: list[Row]) -> Plan:
    count = math.ceil(len(grid) / min(columns, len(grid)))  # grid rows
    per_row = math.ceil(len(grid) / count)  # balanced: 4 nodes on 3 columns make 2x2
    heights = share(size.rows - sum(row.height for row in bottom), count)
    rows = [Row(h, tuple(grid[i * per_row:(i + 1) * per_row])) for i, h in enumerate(heights)]
    return Plan(size, (*rows, *bottom))


def share(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal integers, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def layout_string(layout: Plan, pane_ids: dict[Slot, int]) -> str:
    """The plan as a tmux custom layout (select-layout), panes named by the
    number in their %id. The top row's cell holds its own title line; lower
    rows' titles sit on the border line above their cell."""
    cols, y, cells = layout.size.cols, 0, []
    for i, row in enumerate(layout.rows):
        height = row.height if i == 0 else row.height - 1
        cells.append(_row_cell(cols, height, y, [pane_ids[slot] for slot in row.slots]))
        y += height + 1
    body = f"{cols}x{layout.size.rows},0,0[{','.join(cells)}]"
    return f"{checksum(body):04x},{body}"


def _row_cell(cols: int, height: int, y: int, ids: list[int]) -> str:
    if len(ids) == 1:
        return f"{cols}x{height},0,{y},{ids[0]}"
    x, leaves = 0, []
    for width, pane in zip(share(cols - (len(ids) - 1), len(ids)), ids, strict=True):
        leaves.append(f"{width}x{height},{x},{y},{pane}")
        x += width + 1
    return f"{cols}x{height},0,{y}{{{','.join(leaves)}}}"


def checksum(body: str) -> int:
    """tmux's layout checksum (layout-custom.c): a 16-bit rotate-and-add."""
    csum = 0
    for char in body:
        csum = ((csum >> 1) + ((csum & 1) << 15) + ord(char)) & 0xFFFF
    return csum
