"""rocm-smi's look for an AMD job's snapshot: its default concise table
(ROCm/rocm_smi_lib python_smi_tools/rocm_smi.py showAllConcise at
rocm-6.2.0), one per node under a `==> host <==` line as the NVIDIA tables
are; boards' conventions live in data/rocm_smi.toml.

Unlike nvidia-smi, rocm-smi prints no clock line and no processes; its
subheader is in italics (ANSI escapes, which `fit` keeps whole when it cuts
lines to a pane)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from fakerun import texts

if TYPE_CHECKING:
    from fakerun.smi.snapshot import GpuRow, Snapshot


def table(snap: Snapshot) -> list[str]:
    """Every node's table, node 0 first."""
    nodes = _by_node(snap.gpus)
    if len(nodes) == 1:
        return _node_table(next(iter(nodes.values())))
    lines: list[str] = []
    for gpus in nodes.values():
        lines += [""] if lines else []
        lines += [_data()["host"].format(host=gpus[0].host), *_node_table(gpus)]
    return lines


def fit(snap: Snapshot, cols: int, rows: int, page: int) -> list[str]:
    """The tables on a cols x rows screen: cut at the width as watch(1) cuts
    them (the italic subheader with its escapes whole); too tall, one page of
    GPU rows at a time under the table's head, its page number on the title."""
    lines = table(snap)
    if len(lines) > rows:
        lines = _page(lines, rows, page)
    return [_cut(line, cols) for line in lines]


def _node_table(gpus: list[GpuRow]) -> list[str]:
    data = _data()
    board = data["board"][gpus[0].name]
    header = list(data["columns"])
    sub = [s.format(temp=board["temp"], power=board["power"]) for s in data["subheader"]]
    for i, (h, s) in enumerate(zip(header, sub, strict=True)):  # each the other's width
        header[i], sub[i] = h.ljust(len(s)), s.ljust(len(h))
    by_index = {g.index: g for g in gpus}
    rows = [_values(g, board, by_index.get(g.index ^ 1)) for g in gpus]
    widths = [max(len(h) + 2, *(len(r[i]) + 2 for r in rows)) for i, h in enumerate(header)]
    line = "".join
    head = line(w.ljust(widths[i]) for i, w in enumerate(header))
    size = len(head)
    on, off = data["italics"]
    return [_spacer(data["header"], size), _spacer(data["title"], size), head,
            on + line(w.ljust(widths[i]) for i, w in enumerate(sub)) + off, _spacer("", size),
            *(line(v.ljust(widths[i]) for i, v in enumerate(r)) for r in rows),
            _spacer("", size), _spacer(data["footer"], size)]


def _values(g: GpuRow, board: dict[str, Any], partner: GpuRow | None) -> list[str]:
    """One device's row: showAllConcise's values (temperature and power with
    one decimal, VRAM% the floor of used / total). Two GCDs of a package
    (`pair`): its power and cap on the first, none on the second; a partner
    outside the job idles."""
    idle, busy = board["sclk"]
    sclk = round(idle + (busy - idle) * g.util / 100) if g.pid else idle
    vram = 100 * g.mem_used_mib // g.mem_total_mib
    power, cap = float(g.power_w), float(g.power_cap_w)
    if board.get("pair"):
        first = g.index % 2 == 0
        power = power + (partner.power_w if partner else board["idle_w"]) if first else 0.0
        cap = 2 * cap if first else 0.0
    temp = f"{float(g.temp_c):.1f}\u00b0C"
    return [str(g.index), str(g.kfd_node), f"{board['did']}, ", str(g.guid), temp,
            f"{power:.1f}W" if power else "N/A", board["partitions"], f"{sclk}Mhz", board["mclk"],
            board["fan"], board["perf"], f"{cap:.1f}W", f"{vram}%", f"{g.util}%"]


def _spacer(text: str, size: int, fill: str = "=") -> str:
    """printLogSpacer: `text` centred in `fill`, over an even width."""
    size += size % 2
    if not text:
        return fill * size
    text += fill if len(text) % 2 else ""
    side = fill * ((size - len(text)) // 2)
    return side + text + side


def _page(lines: list[str], rows: int, page: int) -> list[str]:
    """A page of the GPU rows of a single table (a cluster pages by nodes)."""
    head, body, tail = lines[:5], lines[5:-2], lines[-2:]
    per = max(1, rows - len(head) - len(tail))
    pages = [body[i:i + per] for i in range(0, len(body), per)] or [[]]
    chosen = page % len(pages)
    title = head[1].rstrip("=") + f" [{chosen + 1}/{len(pages)}]"
    return [head[0], title, *head[2:], *pages[chosen], *tail]


def _cut(line: str, cols: int) -> str:
    on, off = _data()["italics"]
    if line.startswith(on) and line.endswith(off):
        return on + line[len(on):-len(off)][:cols] + off
    return line[:cols]


def _by_node(gpus: list[GpuRow]) -> dict[int, list[GpuRow]]:
    grouped: dict[int, list[GpuRow]] = {}
    for gpu in sorted(gpus, key=lambda g: (g.node, g.index)):
        grouped.setdefault(gpu.node, []).append(gpu)
    return grouped


@cache
def _data() -> dict[str, Any]:
    return texts.load("rocm_smi")
