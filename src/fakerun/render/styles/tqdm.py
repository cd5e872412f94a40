"""tqdm's text, as tqdm.format_meter builds it (tqdm 4.66-4.70, tqdm/std.py):
the pieces every imitated progress bar is made of. A bar's stream is not a
terminal in a log, so tqdm draws it 10 characters wide."""

from __future__ import annotations

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
