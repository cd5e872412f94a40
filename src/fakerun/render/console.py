"""The plain console: whole lines, the rank lines routed and prefixed as the
run's settings (--tee, --redirects, --local-ranks-filter, the prefix
template) make torchrun route and prefix them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from fakerun.render.lines import STDERR, Line
from fakerun.render.sinks import OutputClosed
from fakerun.render.tail import TailedFile
from fakerun.system.streams import silence
from fakerun.world.settings import Settings
from fakerun.world.topology import local_rank_of


class ConsoleSink:
    """A LineSink: the plain console."""

    console = True
    animated = False

    def __init__(self, stdout: TextIO, stderr: TextIO, nproc_per_node: int,
                 node_ranks: range | None, show_ranks: bool = True,
                 settings: Settings | None = None) -> None:
        """`settings`: what decides the rank lines' routes and prefix (default
        a job launched with --tee 3)."""
        self.streams = {"stdout": stdout, "stderr": stderr}
        self.nproc = nproc_per_node
        self.node_ranks = node_ranks
        self.show_ranks = show_ranks
        self.settings = settings or Settings(tee=3)

    def write(self, lines: Iterable[Line]) -> None:
        """One moment's writes (an event's): a teed stream's reader catches
        up with them at its end, and where a write says the writer pauses."""
        tails: dict[tuple[int, str], TailedFile] = {}
        for line in lines:
            if line.rank is None:
                self._put(line.stream, line.text + line.end)
            elif self.show_ranks and (self.node_ranks is None or line.rank in self.node_ranks):
                local_rank = local_rank_of(line.rank, self.nproc)
                shown, prefixed = self.settings.console(line.stream, local_rank)
                if shown and prefixed:
                    tail = tails.setdefault((line.rank, line.stream),
                                            TailedFile(self.settings.prefix(line.rank, local_rank)))
                    self._put(line.stream, tail.written(line.text + line.end))
                    if line.pause:
                        self._put(line.stream, tail.caught_up())
                elif shown:  # the worker's own stream: its bytes as written, `\r` and all
                    self._put(line.stream, line.text + line.end)
        for (_, stream), tail in tails.items():
            self._put(stream, tail.caught_up())

    def _put(self, stream: str, text: str) -> None:
        if not text:
            return
        try:
            self.streams[stream].write(text)
        except OSError:  # EPIPE, or EIO from a hung-up terminal
            silence(self.streams[stream])
            raise OutputClosed(stream) from None

    def flush(self) -> None:
        for name in ("stdout", STDERR):
            try:
                self.streams[name].flush()
            except (OSError, ValueError):  # EPIPE, EIO (terminal gone), closed file
                silence(self.streams[name])
                raise OutputClosed(name) from None

    def close(self) -> None:
        """The streams are the caller's: nothing to close."""
