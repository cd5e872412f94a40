"""nvidia-smi's default table for a job's GPU snapshot (rocm-smi's for AMD
GPUs: smi/rocm.py), character for character in the layout of the snapshot's driver (layouts, borders' widths
and boards' conventions live in data/nvidia_smi.toml).

nvidia-smi shows one host; a cluster has several. A single node prints as
the plain table; several nodes print one table per node, each under a
`==> host <==` line (as `tail` heads several files), separated by an empty
line. `compact` is fakerun's own one-line-per-node summary for small panes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from fakerun import texts
from fakerun.smi import query, rocm
from fakerun.smi.device import Device, process_mib, pstate
from fakerun.world import xid

if TYPE_CHECKING:
    from fakerun.smi.snapshot import GpuRow, Snapshot

MIB_PER_GIB = 1024
# A GPU fallen off the bus (Xid 79) in the live table: NVML answers nothing
# for it, which nvidia-smi's table prints as "ERR!" in each reading's place.
LOST_FIELD = "ERR!"
LOST_KEYS = ("ecc", "fan", "temp", "perf", "power", "cap", "used", "total", "util")
FIT_GAP = 2  # columns between tables side by side
DASHBOARD_FIELDS = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"


@dataclass(frozen=True)
class Layout:
    since: tuple[int, int]
    columns: tuple[int, ...]
    rule_start: str
    spacer: str
    name_width: int
    pid_width: int
    process_name_width: int
    header: str
    titles: tuple[str, ...]
    gpu: tuple[str, ...]
    process_titles: tuple[str, ...]

    @property
    def width(self) -> int:
        return sum(self.columns) + len(self.columns) + 1


def table(snap: Snapshot, now_text: str | None = None) -> list[str]:
    """The whole cluster: node 0's table, then node 1's, ... `now_text` is
    the first line's time.ctime() text (default: the snapshot's time)."""
    if snap.vendor == "amd":
        return rocm.table(snap)
    now = time.ctime(snap.shown_time) if now_text is None else now_text
    nodes = by_node(snap.gpus)
    if len(nodes) == 1:
        return _node_table(snap, next(iter(nodes.values())), now)
    lines: list[str] = []
    for gpus in nodes.values():
        if lines:
            lines.append("")
        lines.append(_data()["host"].format(host=gpus[0].host))
        lines.extend(_node_table(snap, gpus, now))
    return lines


def fit(snap: Snapshot, cols: int, rows: int, page: int, now_text: str | None = None) -> list[str]:
    """The cluster on a cols x rows screen (the theatre's dashboard). The
    tables, nodes side by side as far as the width allows; if they are too
    tall, one page at a time (page `page`, modulo the count): each page is a
    table's heading (host and page number on its clock line) over the GPUs or
    the processes that fit. Narrower than a table: the --query-gpu CSV, pdsh
    style. Lines are cut at the width, as watch(1) cuts them."""
    if snap.vendor == "amd":
        return rocm.fit(snap, cols, rows, page)
    now = time.ctime(snap.shown_time) if now_text is None else now_text
    width = layout_for(snap.driver).width
    if cols < width:
        query = _query(snap)
        pages = _chunks(query[:1], [[line] for line in query[1:]], rows, [])
    else:
        nodes = list(by_node(snap.gpus).values())
        across = max(1, (cols + FIT_GAP) // (width + FIT_GAP))
        bands = [nodes[i:i + across] for i in range(0, len(nodes), across)]
        whole = table(snap, now) if len(nodes) == 1 else _bands(snap, bands, now, width)
        pages = [whole] if len(whole) <= rows else [
            p for band in bands for p in _band_pages(snap, band, now, width, rows)]
    if len(pages) == 1:
        return [line[:cols] for line in pages[0]]
    chosen, mark = pages[page % len(pages)], f"[{page % len(pages) + 1}/{len(pages)}]"
    return [line[:cols] for line in [_mark(chosen[0], mark, min(cols, max(map(len, chosen)))),
                                     *chosen[1:]]]


def _bands(snap: Snapshot, bands: list[list[list[GpuRow]]], now: str, width: int) -> list[str]:
    """Every node's whole table under its host line, bands of them side by side."""
    lines: list[str] = []
    for band in bands:
        lines += [""] if lines else []
        lines += _side_by_side([[_data()["host"].format(host=g[0].host), *_node_table(snap, g, now)]
                                for g in band], width)
    return lines


def _band_pages(snap: Snapshot, band: list[list[GpuRow]], now: str, width: int,
                rows: int) -> list[list[str]]:
    """The pages of nodes side by side: the same page of each node's table."""
    per_node = [_node_pages(snap, gpus, now, rows) for gpus in band]
    return [_side_by_side([pages[i] if i < len(pages) else [] for pages in per_node], width)
            for i in range(max(len(p) for p in per_node))]


def _node_pages(snap: Snapshot, gpus: list[GpuRow], now: str, rows: int) -> list[list[str]]:
    """One node's table cut into pages that fit `rows`, each page under the
    heading of its part (the GPU grid's or the processes table's)."""
    lines = _node_table(snap, gpus, now)
    clock = f"{lines[0]}  ==> {gpus[0].host} <=="
    grid = next(i for i, line in enumerate(lines) if line.startswith("|=")) + 1
    blocks = [lines[grid + 4 * i:grid + 4 * i + 4] for i in range(len(gpus))]
    procs = lines[grid + 4 * len(gpus) + 1:]  # after the spacer: heading (5), rows, bottom rule
    pages = _chunks([clock, *lines[1:grid]], blocks, rows, [])
    rows_of = [[row] for row in procs[5:-1]]
    return pages + _chunks([clock, *procs[:5]], rows_of, rows, procs[-1:])


def _chunks(head: list[str], items: list[list[str]], rows: int, tail: list[str]) -> list[list[str]]:
    per = max(1, (rows - len(head) - len(tail)) // max(1, len(items[0]) if items else 1))
    return [[*head, *(line for item in items[i:i + per] for line in item), *tail]
            for i in range(0, len(items), per)]


def _query(snap: Snapshot) -> list[str]:
    """`pdsh -w <nodes> nvidia-smi --query-gpu=... --format=csv`: one header, then a line per GPU
    (each node's lines as its nvidia-smi prints them, smi/query.py's)."""
    fields = query.fields("query_gpu", DASHBOARD_FIELDS)
    host_width = max(len(g.host) for g in snap.gpus)
    lines = [f"{'':<{host_width}}  {query.csv(fields, [], query.Format())[0]}"]
    for gpus in by_node(snap.gpus).values():
        devices = [Device(snap, g) for g in gpus]
        rows = query.csv(fields, query.gpu_rows(devices, fields, len(devices)), query.Format(header=False))
        lines += [f"{gpus[0].host + ':':<{host_width + 1}} {row}" for row in rows]
    return lines


def _mark(line: str, mark: str, cols: int) -> str:
    """`line` with `mark` at its right end, within `cols`."""
    return line[:max(0, cols - len(mark) - 1)].ljust(cols - len(mark)) + mark


def _side_by_side(tables: list[list[str]], width: int) -> list[str]:
    depth = max(len(t) for t in tables)
    gap = " " * FIT_GAP
    return [gap.join(f"{t[i] if i < len(t) else '':<{width}}" for t in tables).rstrip()
            for i in range(depth)]


def compact(snap: Snapshot, nodes: range | None = None) -> list[str]:
    """One line per node (all, or those in `nodes`): host, GPU count, mean
    utilisation, memory used/total, total power and the hottest GPU."""
    chosen = [gpus for node, gpus in by_node(snap.gpus).items() if nodes is None or node in nodes]
    host_width = max((len(gpus[0].host) for gpus in chosen), default=0)
    return [_summary(gpus, host_width) for gpus in chosen]


def by_node(gpus: list[GpuRow]) -> dict[int, list[GpuRow]]:
    grouped: dict[int, list[GpuRow]] = {}
    for gpu in sorted(gpus, key=lambda g: (g.node, g.index)):
        grouped.setdefault(gpu.node, []).append(gpu)
    return grouped


def layout_for(driver: str) -> Layout:
    """The newest layout whose first driver is not newer than `driver`."""
    version = _version(driver)
    chosen = [lay for lay in _layouts() if lay.since <= version]
    return max(chosen, key=lambda lay: lay.since)


def _summary(gpus: list[GpuRow], host_width: int) -> str:
    n = len(gpus)
    util = round(sum(g.util for g in gpus) / n)
    used = sum(g.mem_used_mib for g in gpus) / MIB_PER_GIB
    total = sum(g.mem_total_mib for g in gpus) / MIB_PER_GIB
    power = sum(g.power_w for g in gpus)
    hottest = max(g.temp_c for g in gpus)
    return (f"{gpus[0].host:<{host_width}}  {n:>2} GPU{'s' if n != 1 else ' '}  util {util:>3}%  "
            f"mem {used:>6.1f}/{total:.1f} GiB  power {power:>5} W  max {hottest}C")


def _node_table(snap: Snapshot, gpus: list[GpuRow], now: str) -> list[str]:
    lay = layout_for(snap.driver)
    data = _data()
    lines = [data["clock"].format(now=now), _line("+", "-", [lay.width - 2], "+"),
             lay.header.format(driver=snap.driver, cuda=snap.cuda),
             _line(lay.rule_start, "-", lay.columns, "+"), *lay.titles,
             _line("|", "=", lay.columns, "|")]
    for gpu in gpus:
        fields = _gpu_fields(gpu, lay)
        lines.extend(_squeezed(template.format(**fields), lay.columns) for template in lay.gpu)
        lines.append(_line("+", "-", lay.columns, "+"))
    lines.append(lay.spacer * lay.width)
    return lines + _processes(snap, gpus, lay)


def _processes(snap: Snapshot, gpus: list[GpuRow], lay: Layout) -> list[str]:
    data, inner = _data(), lay.width - 4
    lines = [_line("+", "-", [lay.width - 2], "+"), f"| {data['processes_title']:<{inner}} |",
             *lay.process_titles, _line("|", "=", [lay.width - 2], "|")]
    name = _left_cut(snap.process, lay.process_name_width - 4)
    rows = [data["process_row"].format(
        gpu=g.index, pid=g.pid, type="C", name=name, pid_width=lay.pid_width,
        name_width=lay.process_name_width, memory=f"{process_mib(g)}MiB")
        for g in gpus if g.pid > 0]
    lines.extend(rows or [f"|  {data['no_processes']:<{inner - 1}} |"])
    return [*lines, _line("+", "-", [lay.width - 2], "+")]


def _gpu_fields(gpu: GpuRow, lay: Layout) -> dict[str, Any]:
    board = _data()["board"]
    traits = board.get(gpu.name, board["default"])
    ecc = str(int(xid.ecc_error(gpu.xid))) if traits["ecc"] == "0" else traits["ecc"]  # its volatile count
    fields = {"index": gpu.index, "name": _right_cut(gpu.name, lay.name_width), "pm": traits["persistence"],
              "bus": gpu.bus_id, "disp": "Off", "ecc": ecc, "fan": traits["fan"],
              "temp": f"{gpu.temp_c}C", "perf": pstate(gpu),  # a loaded GPU stays in P0, busy or not
              "power": f"{gpu.power_w}W", "cap": f"{gpu.power_cap_w}W", "used": f"{gpu.mem_used_mib}MiB",
              "total": f"{gpu.mem_total_mib}MiB", "util": f"{gpu.util}%", "compute": "Default",
              "mig": traits["mig"], "blank": ""}
    if gpu.lost:  # NVML reads nothing from it: nvidia-smi's ERR! in every reading
        fields |= dict.fromkeys(LOST_KEYS, LOST_FIELD)
    return fields


def _squeezed(line: str, columns: tuple[int, ...] | list[int]) -> str:
    """A row whose readings outgrew their cells (a lost GPU's ERR!s) back to
    the table's columns, each cell losing spaces from its widest gap."""
    cells = line.split("|")[1:-1]
    if len(cells) != len(columns):
        return line
    return "|".join(["", *(_cell(cell, width) for cell, width in zip(cells, columns, strict=True)), ""])


def _cell(text: str, width: int) -> str:
    excess = len(text) - width
    gaps = sorted(re.finditer(r" {2,}", text), key=lambda m: len(m.group()), reverse=True)
    if excess <= 0 or not gaps or len(gaps[0].group()) <= excess:
        return text
    return text[:gaps[0].start()] + text[gaps[0].start() + excess:]


def _line(start: str, fill: str, widths: list[int] | tuple[int, ...], end: str) -> str:
    return start + "+".join(fill * w for w in widths) + end


def _right_cut(text: str, width: int) -> str:
    """Board names too long for the column end in `...` (NVIDIA A100-SXM...)."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _left_cut(path: str, width: int) -> str:
    """Process paths keep their end: .../envs/pytorch/bin/python."""
    return path if len(path) <= width else "..." + path[len(path) - width + 3:]


def _version(driver: str) -> tuple[int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in driver.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


@cache
def _data() -> dict[str, Any]:
    return texts.load("nvidia_smi")


@cache
def _layouts() -> tuple[Layout, ...]:
    raw = _data()["layout"]

    def merged(name: str) -> dict[str, Any]:
        body = raw[name]
        return {**(merged(body["base"]) if "base" in body else {}), **body}

    return tuple(_layout(merged(name)) for name in raw)


def _layout(body: dict[str, Any]) -> Layout:
    return Layout(since=_version(body["since"]), columns=tuple(body["columns"]),
                  rule_start=body["rule_start"], spacer=body["spacer"], name_width=body["name_width"],
                  pid_width=body["pid_width"], process_name_width=body["process_name_width"],
                  header=body["header"], titles=tuple(body["titles"]), gpu=tuple(body["gpu"]),
                  process_titles=tuple(body["process_titles"]))
