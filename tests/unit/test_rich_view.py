"""The live view, against an in-memory terminal and a recording Console."""

from __future__ import annotations

import io
import re

from rich.console import Console

from fakerun import events as ev
from fakerun.render.lines import Line
from fakerun.render.rich_view import HIDE_CURSOR, SHOW_CURSOR, RichView
from fakerun.world import identity
from fakerun.world.settings import Settings

IDENT = identity.build(3, 1, 4, 40)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every flush is a new frame
        return self.now


def step(n: int) -> ev.Step:
    return ev.Step(n, 40, 3.5, 3.4, 3.6, 1.2, epoch=1, tokens_per_s=83_569.0, eta_s=754.0)


def view(environ=None) -> tuple[RichView, Terminal]:
    term = Terminal()
    v = RichView(term, term, 4, range(0, 4), environ or {}, clock=Ticks())
    v.event(ev.RunIdentity(IDENT))
    return v, term


def test_footer_is_drawn_below_the_lines_and_erased_at_exit():
    v, term = view()
    v.event(step(5))
    v.event(ev.GpuStatus(5, [ev.GpuSample(r, 0, r, 97, 74, 650, 60000, 81559) for r in range(4)], 0.0))
    v.write([Line("hello from rank 1", "stdout", 1)])
    v.flush()
    out = term.getvalue()
    assert out.startswith(HIDE_CURSOR)
    assert "[default1]:\x1b[0mhello from rank 1\n" in out
    footer = out[out.rindex("hello from rank 1\n") + len("hello from rank 1\n"):]
    assert "step 5/40" in footer and "loss 3.5000" in footer and "83,569 tok/s" in footer
    assert "ETA 12m 34s" in footer and "node 0" in footer
    v.write([Line("next", "stdout", 0)])  # the footer moves out of the way first
    assert "\r\x1b[1A\x1b[J" in term.getvalue()[len(out):]
    v.flush()
    v.close()
    assert term.getvalue().endswith("\x1b[J" + SHOW_CURSOR)


def test_other_nodes_lines_are_not_shown():
    v, term = view()
    v.write([Line("not mine", "stdout", 9)])
    assert "not mine" not in term.getvalue()


def test_no_color_leaves_lines_plain():
    v, term = view({"NO_COLOR": "1"})
    v.write([Line("W1121 19:50:33.000000 1 x.py:1] warn", "stderr", None), Line("hi", "stdout", 2)])
    v.flush()
    body = term.getvalue()
    assert "W1121 19:50:33.000000 1 x.py:1] warn\n[default2]:hi\n" in body
    # Cursor moves and bold, yes; colours (SGR 30-49, 90-107, 38/48;...), no.
    sgr_params = [p for m in re.findall(r"\x1b\[([0-9;]*)m", body) for p in m.split(";") if p]
    assert not [p for p in sgr_params if 30 <= int(p) <= 49 or 90 <= int(p) <= 107]
    assert "\x1b[2m" not in body


def test_footer_fits_the_width_when_recorded():
    for width in (80, 160):
        v, _ = view()
        v.event(step(12))
        console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True)
        console.print(v._renderable(width))
        text = console.export_text()
        assert "step 12/40" in text
        assert all(len(line) <= width for line in text.splitlines())


def test_rank_lines_follow_the_settings_as_on_the_plain_console():
    term = Terminal()
    drop_in = RichView(term, term, 4, range(0, 4), {"NO_COLOR": "1"}, clock=Ticks(), settings=Settings())
    drop_in.write([Line("bare", "stdout", 1)])
    ranked = RichView(term, term, 4, range(0, 4), {"NO_COLOR": "1"}, clock=Ticks(),
                      settings=Settings(tee=3, redirects=0, role="rank"))
    ranked.write([Line("teed", "stderr", 2)])
    kept = RichView(term, term, 4, range(0, 4), {}, clock=Ticks(), settings=Settings(redirects=3))
    kept.write([Line("in the file only", "stdout", 0)])
    assert "\nbare\n" in term.getvalue().replace(HIDE_CURSOR, "\n")
    assert "[rank2]:teed\n" in term.getvalue() and "in the file only" not in term.getvalue()


def test_progress_bar_redraws_scroll_as_whole_lines_without_tqdms_cursor_moves():
    # tqdm's writes (render/styles/tqdm.py): a redraw, a blanking, a bar at position 1 below another.
    v, term = view({"NO_COLOR": "1"})
    v.write([Line("\r 10%|█         | 1/10 [00:02<00:18,  2.00s/it]", "stderr", 0, end=""),
             Line("\r                                               \r", "stderr", 0, end=""),
             Line("\n\r 40%|████      | 2/5 [00:00<00:00,  6.67it/s]\x1b[A", "stderr", 0, end="")])
    body = term.getvalue()
    assert "[default0]: 10%|█         | 1/10 [00:02<00:18,  2.00s/it]\n" \
           "[default0]: 40%|████      | 2/5 [00:00<00:00,  6.67it/s]\n" in body
    assert "\x1b[A" not in body and "\r[default0]" not in body
