"""The plain console: whole lines, torchrun's `--tee` prefix on rank lines."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from string import Template
from typing import TextIO

from fakerun.render.lines import STDERR, Line
from fakerun.render.sinks import OutputClosed
from fakerun.system.streams import silence
from fakerun.world.topology import local_rank_of

# torchrun's default TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE-equivalent.
DEFAULT_PREFIX = "[${role_name}${local_rank}]:"


STD_BITS = {"stdout": 1, STDERR: 2}  # torchrun's Std: 1 stdout, 2 stderr, 3 both


@dataclass(frozen=True)
class RankStreams:
    """torchrun's --tee, --redirects and --local-ranks-filter: which rank lines
    reach the console, and which wear the `[defaultN]:` prefix."""

    tee: int = 3
    redirects: int = 0
    local_ranks: frozenset[int] | None = None

    def shown(self, stream: str, local_rank: int) -> tuple[bool, bool]:
        """(on the console, prefixed)."""
        if self.local_ranks is not None and local_rank not in self.local_ranks:
            return False, False
        bit = STD_BITS[stream]
        if self.tee & bit:
            return True, True
        return not self.redirects & bit, False  # not teed: the rank's own stream, bare


class ConsoleSink:
    """A LineSink: the plain console."""

    console = True
    animated = False

    def __init__(self, stdout: TextIO, stderr: TextIO, nproc_per_node: int,
                 node_ranks: range | None, show_ranks: bool = True,
                 prefix: str = DEFAULT_PREFIX, streams: RankStreams = RankStreams()) -> None:
        self.streams = {"stdout": stdout, "stderr": stderr}
        self.nproc = nproc_per_node
        self.node_ranks = node_ranks
        self.show_ranks = show_ranks
        self.prefix = Template(prefix)
        self.rank_streams = streams

    def write(self, lines: Iterable[Line]) -> None:
        for line in lines:
            if line.rank is None:
                self._put(line.stream, line.text)
            elif self.show_ranks and (self.node_ranks is None or line.rank in self.node_ranks):
                shown, prefixed = self.rank_streams.shown(line.stream, local_rank_of(line.rank, self.nproc))
                if shown:
                    self._put(line.stream, self._prefix(line.rank) + line.text if prefixed else line.text)

    def _prefix(self, rank: int) -> str:
        return self.prefix.safe_substitute(role_name="default", local_rank=local_rank_of(rank, self.nproc),
                                           rank=rank)

    def _put(self, stream: str, text: str) -> None:
        try:
            self.streams[stream].write(text + "\n")
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
