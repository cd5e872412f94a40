"""The README's pictures, rendered from real fakerun runs to SVG, with no terminal.

    python tools/pictures.py [--out DIR]        # default: docs/pictures

- live-view.svg: `fakerun --output rich --nproc 8` on a 120x34 terminal;
- theatre.svg: `fakerun --nodes 2 --nproc 8` on a 161x48 terminal: each node
  agent's pane and the nvidia-smi dashboard, laid out as the theatre lays
  them out (theatre/layout.py) under tmux's pane borders and titles;
- plain-output.txt: what `--output plain` prints of the live view's run, every
  line up to the same moment, stdout and stderr as a 120-column terminal shows them.

Each node agent runs in a process of its own (`pictures.py capture …`), a
real launcher with real ranks, its live view writing to an in-memory
terminal (a pty only gives it its size). After the step the picture is
taken at, the view draws its footer and the screen is read off the bytes
it wrote; node 0's dashboard table is the one `fakerun smi` draws from the
same moment's snapshot. The runs are fixed (--seed, --start-time,
--speed 0), so the pictures come out byte for byte the same:
tests/e2e/test_pictures.py checks the committed ones are current
(FAKERUN_REGEN_PICTURES=1 rewrites them).
"""

from __future__ import annotations

import argparse
import fcntl
import io
import itertools
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.text import Text

from fakerun import events as ev
from fakerun.cli.main import build_parser, to_config
from fakerun.launcher.agent import IO, Launcher
from fakerun.render.console import ConsoleSink
from fakerun.render.renderer import build_renderer
from fakerun.smi.sink import SmiStateSink
from fakerun.smi.snapshot import Snapshot
from fakerun.smi.table import fit
from fakerun.theatre import layout as lay

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--seed", "5", "--start-time", "2026-03-02T09:00:00", "--speed", "0", "--max-steps", "20",
       "--output", "rich"]
# Late enough that the launch banner has scrolled out of the node panes; a step
# whose GPU report fills the footer's node strips (timeline.py: every 10 log steps).
AT_STEP = 10
LIVE = (120, 34)
THEATRE = (161, 48)
CAPTURE_TIMEOUT_S = 120
ERASE = re.compile(r"\r(?:\x1b\[(\d+)A)?\x1b\[J")  # rich_view.RichView._erase
BORDER, ACTIVE = "", "green"  # tmux's pane-border-style and pane-active-border-style defaults
# What a user's environment could change in a run's output: the pictures are of the defaults.
CLEAN_ENV = ("PATH", "HOME", "PYTHONPATH", "TMPDIR", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class Pane:
    x: int
    width: int
    top: int  # its title line's row
    rows: int  # below it


# -- one node agent, in its own process ---------------------------------------------
def capture(cols: int, rows: int, out: Path, argv: list[str]) -> None:
    """Run one agent of `argv` and write its screen at AT_STEP (and node 0's
    dashboard snapshot) to `out` as JSON."""
    config = to_config(build_parser().parse_args(argv))
    term = Terminal(sized_pty(cols, rows))
    environ = {**os.environ, "COLUMNS": str(cols)}
    launcher = Launcher(config, IO(stdout=term, stderr=term, environ=environ))
    renderer = launcher.renderer = build_renderer(config, term, term, environ)
    view = renderer.line_sinks[0]
    view.clock = itertools.count().__next__  # every flush draws the footer as it stands, never a stale one
    # The plain console of the same run beside it: the lines --output plain
    # prints (one formatter feeds every sink), without a second run.
    plain = io.StringIO()
    topo = config.topology
    renderer.line_sinks.append(ConsoleSink(plain, plain, topo.nproc_per_node, topo.node_ranks(),
                                           settings=config.settings))

    def take() -> None:
        view.flush()
        smi = next((s.snapshot() for s in renderer.event_sinks if isinstance(s, SmiStateSink)), None)
        out.write_text(json.dumps({"host": config.identity.hosts[topo.node_rank],
                                   "screen": screen(term.getvalue()), "plain": plain.getvalue(),
                                   "smi": smi.to_json() if smi else None}))

    renderer.event_sinks.insert(0, Freeze(take))
    launcher.run()


class Terminal(io.StringIO):
    """What the view writes, kept whole; a terminal of the pty's size."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd


class Freeze:
    """An event sink ahead of the view's: as the next step's Step comes, before
    the view has it, `take` the picture: every line and report of AT_STEP
    (its NCCL stats, GPU report, an evaluation) is written by then."""

    console = clocked = False

    def __init__(self, take: Callable[[], None]) -> None:
        self.take = take

    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step) and e.step == AT_STEP + 1:
            self.take()

    def flush(self) -> None: ...

    def close(self) -> None: ...


def sized_pty(cols: int, rows: int) -> int:
    """A pty's terminal end (both ends stay open for the process's life)."""
    _, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return slave


def screen(written: str) -> list[str]:
    """The logical lines on screen after `written`: the live view's only
    cursor moves are its footer's erase (CR, up N, clear to the end)."""
    written = written.replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    lines, pos = [""], 0
    for m in ERASE.finditer(written):
        _add(lines, written[pos:m.start()])
        del lines[len(lines) - 1 - int(m.group(1) or 0):]
        lines.append("")
        pos = m.end()
    _add(lines, written[pos:])
    return lines


def _add(lines: list[str], chunk: str) -> None:
    first, *rest = chunk.split("\n")
    lines[-1] += first
    lines.extend(rest)


# -- the pictures ------------------------------------------------------------------------
def rows_of(lines: list[str], width: int) -> list[Text]:
    """Logical lines as a terminal `width` wide shows them: wrapped."""
    out = []
    for line in lines:
        text = Text.from_ansi(line)
        out += [text[i:i + width] for i in range(0, max(1, len(text)), width)]
    return out


def bottom(rows: list[Text], height: int) -> list[Text]:
    """A screen `height` rows tall: the last rows once it is full, as it scrolls."""
    rows = rows[-height:]
    return rows + [Text()] * (height - len(rows))


def run_captures(argvs: list[list[str]], size: list[tuple[int, int]], tmp: Path) -> list[dict]:
    """Each run's capture, side by side; the first failure ends them all."""
    env = {k: os.environ[k] for k in CLEAN_ENV if k in os.environ}
    # TERM: the 256 colours of a terminal emulator's (and of the theatre's tmux, screen-256color)
    env.update(FAKERUN_TOKEN="pictures", TZ="UTC", LANG="C.UTF-8", TERM="xterm-256color")
    outs = [tmp / f"capture{i}.json" for i in range(len(argvs))]
    procs = [subprocess.Popen([sys.executable, __file__, "capture", str(c), str(r), str(o), "--", *a],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for a, (c, r), o in zip(argvs, size, outs, strict=True)]
    try:
        for proc, out in zip(procs, outs, strict=True):
            _, err = proc.communicate(timeout=CAPTURE_TIMEOUT_S)
            if not out.exists():
                last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"pictures: a run ended ({proc.returncode}) before step {AT_STEP}: {last}")
    except subprocess.TimeoutExpired:
        raise SystemExit(f"pictures: a run took over {CAPTURE_TIMEOUT_S} s") from None
    finally:
        for proc in procs:  # its ranks go with it (PR_SET_PDEATHSIG)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [json.loads(o.read_text()) for o in outs]


def live_view(shot: dict) -> list[Text]:
    cols, rows = LIVE
    return bottom(rows_of(shot["screen"], cols), rows)


def theatre_runs() -> tuple[list[list[str]], list[tuple[int, int]]]:
    """The two node agents `fakerun --nodes 2` starts, each on its pane's size."""
    panes = panes_of(lay.plan(2, lay.Size(*THEATRE)))
    port = ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return ([["--nnodes", "2", "--node-rank", str(k), *port, "--nproc", "8", *RUN] for k in (0, 1)],
            [(panes[k].width, panes[k].rows) for k in (0, 1)])


def theatre(shots: list[dict]) -> list[Text]:
    plan = lay.plan(2, lay.Size(*THEATRE))
    panes = panes_of(plan)
    dash = panes[lay.DASHBOARD]
    contents = {k: bottom(rows_of(shots[k]["screen"], panes[k].width), panes[k].rows) for k in (0, 1)}
    # The page the dashboard opens on; its clock line is the machine's local time (TZ=UTC here).
    table = fit(Snapshot.from_json(shots[0]["smi"]), dash.width, dash.rows - 1, 0)
    contents[lay.DASHBOARD] = bottom([Text(line) for line in table], dash.rows)
    titles = {0: shots[0]["host"], 1: shots[1]["host"], lay.DASHBOARD: "nvidia-smi"}
    return compose(plan, panes, contents, titles)


def panes_of(plan: lay.Plan) -> dict[lay.Slot, Pane]:
    """Each slot's place, from the custom layout tmux is given (layout_string)."""
    slots = plan.slots
    ids = {slot: i for i, slot in enumerate(slots)}
    cells = re.findall(r"(\d+)x(\d+),(\d+),(\d+),(\d+)", lay.layout_string(plan, ids))
    places = {slots[int(i)]: (int(x), int(w)) for w, _, x, _, i in cells}
    panes, top = {}, 0
    for row in plan.rows:
        for slot in row.slots:
            x, width = places[slot]
            panes[slot] = Pane(x, width, top, row.height - 1)
        top += row.height
    return panes


def compose(plan: lay.Plan, panes: dict[lay.Slot, Pane], contents: dict[lay.Slot, list[Text]],
            titles: dict[lay.Slot, str]) -> list[Text]:
    """The window as tmux draws it with pane-border-status top: each row of
    panes under a border line carrying their titles; `│` between panes,
    joined to the lines above and below; the active pane's (the dashboard's)
    border green."""
    out: list[Text] = []
    above: set[int] = set()
    for row in plan.rows:
        here = sorted(((panes[s], s) for s in row.slots), key=lambda ps: ps[0].x)
        seams = {p.x + p.width for p, _ in here[:-1]}
        style = ACTIVE if lay.DASHBOARD in row.slots else BORDER
        line = Text(style=style)
        for p, slot in here:
            label = f"── {titles[slot]} "
            line.append(label + "─" * (p.width - len(label)))
            if p.x + p.width in seams:
                line.append("┼" if p.x + p.width in above else "┬")
        for seam in sorted(above - seams):
            line = line[:seam] + Text("┴", style=style) + line[seam + 1:]
        out.append(line)
        for i in range(here[0][0].rows):
            text = Text()
            for p, slot in here:
                cell = contents[slot][i].copy()
                cell.truncate(p.width, pad=True)
                text.append_text(cell)
                if p.x + p.width in seams:
                    text.append("│", style=BORDER)
            out.append(text)
        above = seams
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def svg(rows: list[Text], width: int, title: str) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True,
                      color_system="256", legacy_windows=False)
    for row in rows:
        console.print(row, no_wrap=True, overflow="crop", crop=True)
    head, _, body = console.export_svg(title=title).partition("\n")
    # The SVG's markup is rich's: the test compares bytes only under the same rich.
    return f"{head}\n    <!-- tools/pictures.py with rich {version('rich')} -->\n{body}"


def make(out: Path, tmp: Path, run_id: str) -> list[Path]:
    """Every capture at once (they are mostly waiting: the wall time is the slowest's)."""
    nodes, sizes = theatre_runs()
    runs = [[*argv, "--rdzv-id", run_id] for argv in (["--nproc", "8", *RUN], *nodes)]
    live, *pair = run_captures(runs, [LIVE, *sizes], tmp)
    out.mkdir(parents=True, exist_ok=True)
    made = [(out / "live-view.svg", svg(live_view(live), LIVE[0], "fakerun --nproc 8")),
            (out / "theatre.svg", svg(theatre(pair), THEATRE[0], "fakerun --nodes 2 --nproc 8")),
            (out / "plain-output.txt", live["plain"])]
    for path, text in made:
        path.write_text(text)
    return [path for path, _ in made]


def main(argv: list[str]) -> int:
    if argv[:1] == ["capture"]:
        cols, rows, out, sep, *run = argv[1:]
        capture(int(cols), int(rows), Path(out), run if sep == "--" else [sep, *run])
        return 0
    parser = argparse.ArgumentParser(prog="pictures.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pictures")
    parser.add_argument("--rdzv-id", default="pictures", help="the runs' run id (it shows nowhere on screen)")
    args = parser.parse_args(argv)
    os.environ["TZ"] = "UTC"  # time.ctime in the dashboard's table
    time.tzset()
    with tempfile.TemporaryDirectory(prefix="pictures-") as tmp:
        for path in make(args.out, Path(tmp), args.rdzv_id):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
