"""The watching terminal of `fakerun smi --watch`: frames redrawn in place
with plain ANSI codes, and single key presses read without Enter. Waiting is
a select() on stdin with the refresh timeout, so a pane left watching for
hours costs next to no CPU."""

from __future__ import annotations

import os
import select
import termios
import tty
from typing import Any, TextIO

HOME, CLEAR_SCREEN, CLEAR_LINE_REST, CLEAR_BELOW = "\x1b[H", "\x1b[2J", "\x1b[K", "\x1b[J"


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


class Screen:
    """On a terminal each frame overwrites the last (cursor home, then each
    line's rest and everything below is cleared: no flicker, unlike clearing
    first); anywhere else frames simply follow each other."""

    def __init__(self, out: TextIO, in_place: bool | None = None) -> None:
        self.out = out
        self.tty = is_tty(out) if in_place is None else in_place
        self.first = True
        self.mid_line = False  # the cursor stands at the end of a drawn frame's last line

    def size(self) -> os.terminal_size | None:
        """The terminal's size now (it may have been resized), or None."""
        if not self.tty:
            return None
        try:
            return os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError):
            return None

    def draw(self, lines: list[str]) -> None:
        if self.tty:
            head = HOME + CLEAR_SCREEN if self.first else HOME
            # no newline after the last line: a frame as tall as the screen must not scroll it
            text = head + "\n".join(line + CLEAR_LINE_REST for line in lines) + CLEAR_BELOW
        else:
            text = "".join(line + "\n" for line in lines)
        self.first = False
        self.mid_line = self.tty
        self.out.write(text)
        self.out.flush()

    def leave(self) -> None:
        """Done drawing: on a terminal, end the frame's last line, so that
        what comes next (the shell's prompt) starts on a line of its own."""
        if self.mid_line:
            self.mid_line = False
            self.out.write("\n")
            self.out.flush()


class Keys:
    """Keys from a terminal's stdin in cbreak mode (no Enter needed; Ctrl+C
    still interrupts). The terminal's settings are restored on exit, however
    the watch ended. Without a terminal, wait() only sleeps."""

    def __init__(self, stdin: Any) -> None:
        self.stdin = stdin
        self.fd: int | None = None
        self.saved: list[Any] | None = None

    def __enter__(self) -> Keys:
        if is_tty(self.stdin):
            self.fd = self.stdin.fileno()
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    @property
    def interactive(self) -> bool:
        return self.fd is not None

    def wait(self, timeout: float) -> str | None:
        """Sleep up to `timeout` seconds: the keys pressed meanwhile ("" if
        none), or None when the terminal is gone (a hangup reads as EOF)."""
        fds = [self.fd] if self.fd is not None else []
        ready, _, _ = select.select(fds, [], [], timeout)
        if not ready or self.fd is None:
            return ""
        try:
            data = os.read(self.fd, 64)
        except OSError:
            return None
        return data.decode(errors="replace") if data else None
