"""Per-rank log files: each local rank's own lines in its own
stdout.log / stderr.log, as torchrun's --log-dir lays them out.

A disk that fills (or any other write error) is a SinkFailed naming the
place (one line, the job stops with 1), never a traceback: the files are
then abandoned, their unwritable buffers dropped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from fakerun.render.lines import Line
from fakerun.render.sinks import SinkFailed
from fakerun.world.settings import Settings


class RankLogFiles:
    """A LineSink: each rank's lines in its own stdout.log and stderr.log."""

    console = False
    animated = False

    def __init__(self, paths: dict[int, tuple[Path, Path]], where: str = "the rank logs",
                 settings: Settings | None = None) -> None:
        """`paths` maps a global rank to its (stdout.log, stderr.log);
        `where` names them in an error (e.g. "--log-dir DIR"); `settings`
        decide which streams torch writes there (default: both, as --tee 3)."""
        self.where = where
        settings = settings or Settings(tee=3)
        # A node's paths come in local rank order (a --tee/--redirects mapping is by local rank).
        self.kept = {(rank, name) for local, rank in enumerate(sorted(paths))
                     for name in ("stdout", "stderr") if settings.in_files(name, local)}
        self.files: dict[tuple[int, str], TextIO] = {}
        self.dirty: set[TextIO] = set()
        try:
            for rank, (out, err) in paths.items():
                self.files[(rank, "stdout")] = open(out, "a", encoding="utf-8")  # noqa: SIM115
                self.files[(rank, "stderr")] = open(err, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise self._failed(exc) from None

    def write(self, lines: Iterable[Line]) -> None:
        try:
            for line in lines:
                if (line.rank, line.stream) not in self.kept:
                    continue  # torchrun's own, or a stream torch leaves on the console
                handle = self.files.get((line.rank, line.stream))
                if handle is not None:
                    handle.write(line.text + line.end)  # a bar's `\r` redraws as tqdm wrote them
                    self.dirty.add(handle)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            for handle in self.dirty:  # the launcher flushes once per loop pass: touch only what changed
                handle.flush()
        except OSError as exc:
            raise self._failed(exc) from None
        self.dirty.clear()

    def close(self) -> None:
        try:
            for handle in self.files.values():
                handle.close()
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> SinkFailed:
        """The error to raise, once every file is closed, unwritten lines dropped."""
        for handle in self.files.values():
            with contextlib.suppress(OSError):
                handle.close()  # its flush fails again; the descriptor is closed all the same
        return SinkFailed(f"{self.where}: {exc.strerror or exc}")
