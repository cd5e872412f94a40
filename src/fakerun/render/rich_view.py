"""The live terminal view: log lines scroll above a small footer (progress
bar, step, loss, throughput, ETA, one status strip per node) that is erased
at exit; on a terminal only (into a pipe or file, the lines alone).

Costs decide the design. A rich print costs ~0.5 ms a line (measured on a
2-core machine: Console.print of a 150-character log line, with its default
markup and highlighting, 0.47 ms; without them 0.08 ms; a plain write
0.2 µs), so scrollback goes out as plain writes with an ANSI-coloured
prefix; the footer is rendered by rich at most `FPS` times a second, from
the main loop (no Live thread, so nothing runs when ranks are forked), and
redrawn from a cached string in between.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fakerun import events as ev
from fakerun.render.lines import DEFAULT_COLUMNS, MAX_COLUMNS, STDERR, Line
from fakerun.render.sinks import OutputClosed
from fakerun.render.styles.pytorch import duration
from fakerun.system.streams import silence
from fakerun.world.settings import Settings
from fakerun.world.topology import local_rank_of

FPS = 2.0
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
STRIP_BLOCKS = " ▁▂▃▄▅▆▇█"
MAX_STRIPS = 4  # node strips beyond this are summarised in one line
CURSOR_UP = "\x1b[A"  # tqdm's moveto for a bar below another (_term_move_up)
COLOURS = {"W": "\x1b[33m", "E": "\x1b[31m", "rank": "\x1b[2m", "reset": "\x1b[0m"}


class RichView:
    """A LineSink and an EventSink: the lines scroll above a live footer."""

    console = True
    animated = True  # the footer redraws on its own clock
    clocked = False  # as an event sink: flushed with the lines

    def __init__(self, stdout: TextIO, stderr: TextIO, nproc: int, node_ranks: range,
                 environ: dict[str, str], clock: Callable[[], float] = time.monotonic,
                 settings: Settings | None = None) -> None:
        """`settings`: what decides the rank lines' routes and prefix, as on the
        plain console (default a job launched with --tee 3)."""
        self.out = stdout
        self.settings = settings or Settings(tee=3)
        self.err = stderr if not _isatty(stderr) else stdout  # one tty: one stream keeps the footer sane
        # The footer, its redraws and the hidden cursor are a terminal's: into a
        # pipe or file (`--output rich` under `--nodes M --no-theatre`, whose
        # agents write to the merging launcher, or `| tee`) every erase and
        # redraw would stay in the scrollback, and break the lines it cut.
        self.live = _isatty(stdout)
        self.nproc = nproc
        self.node_ranks = node_ranks
        self.colour = "NO_COLOR" not in environ
        self.clock = clock
        self.state: dict[str, Any] = {"phase": "init"}
        self.footer, self.footer_height, self.drawn = "", 0, False
        self.next_render = 0.0
        self.rendered_for: tuple[Any, ...] = ()
        self.rich = Console(file=io.StringIO(), force_terminal=True, no_color=not self.colour,
                               highlight=False, markup=False, emoji=False)
        if self.live:
            self._put(self.out, HIDE_CURSOR)

    # -- events update the footer's state -----------------------------------
    def event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            self.state.update(step=e.step, total=e.max_steps, epoch=e.epoch, loss=e.loss,
                              tps=e.tokens_per_s, eta=e.eta_s, phase="train")
        elif isinstance(e, ev.Phase) and e.name != "init":
            self.state["phase"] = e.name
        elif isinstance(e, ev.RunIdentity):
            self.state.update(model=e.identity.model.name, gpu=e.identity.gpu.name,
                              epochs=e.identity.hyper.epochs, total=e.identity.hyper.total_steps)
        elif isinstance(e, ev.GpuStatus):
            self.state["gpus"] = e.gpus

    # -- lines scroll above the footer --------------------------------------
    def write(self, lines: Iterable[Line]) -> None:
        runs: list[tuple[TextIO, list[str]]] = []  # consecutive lines per stream, in order
        for line in lines:
            prefix = ""
            if line.rank is not None:
                if line.rank not in self.node_ranks:
                    continue
                local_rank = local_rank_of(line.rank, self.nproc)
                shown, prefixed = self.settings.console(line.stream, local_rank)
                if not shown:
                    continue
                prefix = self.settings.prefix(line.rank, local_rank) if prefixed else ""
            stream = self.err if line.stream == STDERR else self.out
            if not runs or runs[-1][0] is not stream:
                runs.append((stream, []))
            runs[-1][1].extend(self._styled(Line(text, line.stream, line.rank), prefix)
                               for text in _shown(line))
        if not runs:
            return
        self._erase()
        for stream, texts in runs:
            self._put(stream, "\n".join(texts) + "\n")

    def _styled(self, line: Line, prefix: str) -> str:
        if line.rank is not None:
            if not self.colour or not prefix:
                return prefix + line.text
            return f"{COLOURS['rank']}{prefix}{COLOURS['reset']}{line.text}"
        level = line.text[:1]
        if self.colour and level in ("W", "E") and line.text[1:5].isdigit():
            return f"{COLOURS[level]}{line.text}{COLOURS['reset']}"
        return line.text

    # -- the footer -----------------------------------------------------------
    def flush(self) -> None:
        now = self.clock()
        if self.live and now >= self.next_render and self._stale():
            self._erase()  # with the height that is on screen, before it changes
            self.footer, self.footer_height = self._render()
            self.next_render = now + 1.0 / FPS
        if not self.drawn and self.footer:
            self._put(self.out, self.footer)
            self.drawn = True
        try:
            self.out.flush()
            if self.err is not self.out:
                self.err.flush()
        except (OSError, ValueError):
            silence(self.out)
            raise OutputClosed("stdout") from None

    def close(self) -> None:
        """The footer disappears at exit; the cursor comes back."""
        try:
            self._erase()
            if self.live:
                self._put(self.out, SHOW_CURSOR)
            self.out.flush()
        except OutputClosed:
            pass

    def _erase(self) -> None:
        if self.drawn:
            up = f"\x1b[{self.footer_height - 1}A" if self.footer_height > 1 else ""
            self._put(self.out, f"\r{up}\x1b[J")
            self.drawn = False

    def _stale(self) -> bool:
        """The footer shows only the state and the width: unchanged, no redraw
        (a view left running costs nothing between steps)."""
        key = (_width(self.out), *(id(v) if k == "gpus" else v for k, v in sorted(self.state.items())))
        stale, self.rendered_for = key != self.rendered_for, key
        return stale

    def _render(self) -> tuple[str, int]:
        width = _width(self.out)
        self.rich.width = width
        buffer = self.rich.file
        buffer.seek(0)
        buffer.truncate()
        self.rich.print(self._renderable(width), end="")
        text = buffer.getvalue().rstrip("\n")
        return text, text.count("\n") + 1

    def _renderable(self, width: int) -> Any:
        s = self.state
        total, step = s.get("total") or 1, s.get("step", 0)
        summary = self._summary()
        # The bar takes what the summary leaves (beside the percentage and two spaces), 10 to 40 cells.
        bar_width = max(10, min(40, width - len(summary) - 6))
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=total, completed=step, width=bar_width),
                     Text(f"{step / total:4.0%}", style="bold"),
                     Text(summary, overflow="ellipsis", no_wrap=True))
        return Group(head, *self._strips(width))

    def _summary(self) -> str:
        s = self.state
        parts = [f"step {s.get('step', 0)}/{s.get('total', '?')}"]
        if "epoch" in s:
            parts.append(f"epoch {s['epoch']}/{s.get('epochs', '?')}")
        if "loss" in s:
            parts += [f"loss {s['loss']:.4f}", f"{s['tps']:,.0f} tok/s", f"ETA {duration(s['eta'])}"]
        if s.get("phase") not in (None, "train"):
            parts.append(s["phase"])
        return " · ".join(parts)

    def _strips(self, width: int) -> list[Text]:
        gpus = self.state.get("gpus") or []
        nodes: dict[int, list[ev.GpuSample]] = {}
        for g in gpus:
            nodes.setdefault(g.node, []).append(g)
        strips = []
        for node, group in sorted(nodes.items())[:MAX_STRIPS]:
            bars = "".join(STRIP_BLOCKS[min(8, g.util * 8 // 100)] for g in group)
            temp = sum(g.temp_c for g in group) / len(group)
            power = sum(g.power_w for g in group) / 1000
            strips.append(Text(f"node {node} {bars} {temp:.0f}°C {power:.1f} kW", no_wrap=True,
                               overflow="ellipsis", style="green"))
        if len(nodes) > MAX_STRIPS:
            strips.append(Text(f"… {len(nodes) - MAX_STRIPS} more nodes", style="dim"))
        return strips

    def _put(self, stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
        except (OSError, ValueError):
            silence(stream)
            raise OutputClosed("stdout") from None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _width(stream: TextIO) -> int:
    """The footer's width: the terminal's, up to the layout's MAX_COLUMNS."""
    try:
        return min(MAX_COLUMNS, os.get_terminal_size(stream.fileno()).columns)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return DEFAULT_COLUMNS


def _shown(line: Line) -> list[str]:
    """The whole lines the view scrolls for one write: a progress bar's `\r`
    redraws are lines of the bar's own above the footer, not partial lines
    under it; tqdm's blanking and its cursor moves (a second bar's `\n` and
    `\x1b[A`) would only scramble the footer."""
    if "\r" not in line.text and line.end == "\n":
        return [line.text]
    parts = re.split(r"[\r\n]", line.text.replace(CURSOR_UP, ""))
    return [part for part in parts if part.strip()]
