"""tqdm's text, as tqdm.format_meter builds it (tqdm 4.66-4.70, tqdm/std.py):
the pieces every imitated progress bar is made of. A bar's stream is not a
terminal in a log, so tqdm draws it 10 characters wide."""

from __future__ import annotations

from dataclasses import dataclass, field

BAR_CHARS = " ▏▎▍▌▋▊▉█"  # tqdm's Bar.UTF
BAR_WIDTH = 10  # tqdm's bar when its stream is not a terminal (log files, pipes)


def format_interval(seconds: float) -> str:
    """tqdm.format_interval: `05:09`, `1:32:10`."""
    mins, s = divmod(int(seconds), 60)
    h, m = divmod(mins, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_num(n: float) -> str:
    """tqdm.format_num: 3 significant digits, unless str(n) is shorter."""
    short = f"{n:.3g}".replace("e+0", "e+").replace("e-0", "e-")
    return short if len(short) < len(str(n)) else str(n)


def bar(frac: float, width: int = BAR_WIDTH) -> str:
    """tqdm's Bar.__format__: whole blocks, then one partial block, padded."""
    steps = len(BAR_CHARS) - 1
    filled, part = divmod(int(frac * width * steps), steps)
    drawn = BAR_CHARS[-1] * filled
    return drawn if filled >= width else (drawn + BAR_CHARS[part]).ljust(width)


def format_meter(n: int, total: int, elapsed: float, rate: float | None, remaining: float | None = None,
                 prefix: str = "", postfix: str = "", noinv: bool = False) -> str:
    """tqdm.format_meter for `{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate}{postfix}]`.

    `rate` is in it/s (None: unknown, `?`); tqdm shows it inverted (`s/it`)
    when an iteration takes longer than a second, unless the format asks for
    `rate_noinv_fmt` (`noinv`). `remaining` defaults to tqdm's own estimate."""
    frac = n / total if total else 0.0
    if remaining is None and rate:
        remaining = (total - n) / rate
    left = "?" if remaining is None or not rate else format_interval(remaining)
    per_it = 1 / rate if rate else None
    if per_it is not None and per_it > 1 and not noinv:
        speed = f"{per_it:5.2f}s/it"
    else:
        speed = f"{rate:5.2f}it/s" if rate else "?it/s"
    label = f"{prefix}: " if prefix and not prefix.endswith(": ") else prefix
    tail = f", {postfix}" if postfix else ""
    return (f"{label}{frac * 100:3.0f}%|{bar(frac)}| {n}/{total} "
            f"[{format_interval(elapsed)}<{left}, {speed}{tail}]")


def meter(n: int, total: int, elapsed: float, remaining: float | None, per_it: float) -> str:
    """tqdm's default line with no description: ` 45%|████▍     | 548/1218 [1:32:10<1:52:41, 10.09s/it]`."""
    return format_meter(n, total, elapsed, 1 / per_it if per_it > 0 else None, remaining)


# tqdm.__init__'s defaults, which transformers' ProgressCallback keeps
# (`tqdm(total=state.max_steps, dynamic_ncols=True)`): tqdm/std.py, 4.66 to 4.70.
MININTERVAL_S = 0.1  # the least time between two prints
MAXINTERVAL_S = 10.0  # past it, dynamic miniters falls back to mininterval's rate
SMOOTHING = 0.3  # the EMA's weight of the newest speed


@dataclass
class Ema:
    """tqdm.std.EMA: an exponential moving average, bias-corrected for its first values."""

    alpha: float = SMOOTHING
    last: float = 0.0
    calls: int = 0

    def __call__(self, x: float | None = None) -> float:
        beta = 1 - self.alpha
        if x is not None:
            self.last = self.alpha * x + beta * self.last
            self.calls += 1
        return self.last / (1 - beta ** self.calls) if self.calls else self.last


@dataclass
class Bar:
    """One tqdm bar on a stream that is no terminal, driven by a clock given
    with each call: what tqdm/std.py (4.66-4.70) writes to its file for
    __init__, update, clear (tqdm.write's external_write_mode), refresh and
    close. Each method returns the characters written (tqdm's status printer:
    `\\r`, the bar, spaces over what is left of a longer one), "" for none.
    A bar at `pos` 1 (one opened while another is open, as the Trainer's
    evaluation bar) draws on the next line: tqdm's moveto writes `\n` before
    and the cursor-up escape after each print. Its monitor thread (TMonitor)
    is left out: it redraws only a bar whose dynamic miniters went above 1
    (more than 10 it/s) that then printed nothing for 10 s."""

    total: int
    start_t: float
    pos: int = 0
    leave: bool = True
    n: int = 0
    last_print_n: int = 0
    last_print_t: float = 0.0
    miniters: float = 0.0  # tqdm's dynamic miniters starts at 0
    last_len: int = 0  # the status printer's: the length of the last print
    closed: bool = False
    ema_dn: Ema = field(default_factory=Ema)
    ema_dt: Ema = field(default_factory=Ema)
    ema_miniters: Ema = field(default_factory=Ema)

    @classmethod
    def opened(cls, total: int, now: float, pos: int = 0, leave: bool = True) -> tuple[Bar, str]:
        """tqdm(total=...): the bar, and its first print (0/total, delay 0)."""
        bar = cls(total, now, pos, leave, last_print_t=now)
        return bar, bar.refresh(now)

    def update(self, n: int, now: float) -> str:
        """tqdm.update(n): prints once miniters iterations and mininterval
        seconds have passed since the last print, learning the speed (EMA)."""
        self.n += n
        if self.n - self.last_print_n < self.miniters:
            return ""
        dt = now - self.last_print_t
        if dt < MININTERVAL_S:
            return ""
        dn = self.n - self.last_print_n
        if dt and dn:
            self.ema_dn(dn)
            self.ema_dt(dt)
        printed = self.refresh(now)
        if dt >= MAXINTERVAL_S:
            self.miniters = dn * MININTERVAL_S / dt
        else:
            self.miniters = self.ema_miniters(dn * MININTERVAL_S / dt)
        self.last_print_n, self.last_print_t = self.n, now
        return printed

    def refresh(self, now: float, overall: bool = False) -> str:
        """tqdm.refresh/display: the bar as it stands at `now`; `overall`: the
        rate over the whole run (close's), not the EMA."""
        elapsed = now - self.start_t
        rate = None if overall or not self.ema_dt() else self.ema_dn() / self.ema_dt()
        if rate is None and elapsed:
            rate = self.n / elapsed  # format_meter's fallback: the average speed
        return self._at(self._print(format_meter(self.n, self.total, elapsed, rate)))

    def clear(self) -> str:
        """tqdm.clear (before tqdm.write's message): blanks over the bar, back to column 0."""
        return self._at(self._print("") + "\r")

    def close(self, now: float) -> str:
        """tqdm.close: with leave, the bar at the overall rate, then a newline;
        without, blanks over it."""
        if self.closed:
            return ""
        self.closed = True
        if not self.leave:
            return self._at(self._print("") + ("" if self.pos else "\r"))
        return self.refresh(now, overall=True) + "\n"

    def _print(self, text: str) -> str:
        written = "\r" + text + " " * max(self.last_len - len(text), 0)
        self.last_len = len(text)
        return written

    def _at(self, written: str) -> str:
        """tqdm.moveto(pos) and back around a print (`\x1b[A`: _term_move_up)."""
        return "\n" * self.pos + written + "\x1b[A" * self.pos
