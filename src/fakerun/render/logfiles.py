"""Per-rank log files: each local rank's own lines in its own
stdout.log / stderr.log, as torchrun's --log-dir lays them out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .lines import Line


class RankLogFiles:
    def __init__(self, paths: dict[int, tuple[Path, Path]]) -> None:
        """`paths` maps a global rank to its (stdout.log, stderr.log)."""
        self.files: dict[tuple[int, str], TextIO] = {}
        self.dirty: set[TextIO] = set()
        for rank, (out, err) in paths.items():
            self.files[(rank, "stdout")] = open(out, "a", encoding="utf-8")  # noqa: SIM115
            self.files[(rank, "stderr")] = open(err, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, lines: Iterable[Line]) -> None:
        for line in lines:
            handle = self.files.get((line.rank, line.stream)) if line.rank is not None else None
            if handle is not None:
                handle.write(line.text + "\n")
                self.dirty.add(handle)

    def flush(self) -> None:
        for handle in self.dirty:  # the launcher flushes once per loop pass: touch only what changed
            handle.flush()
        self.dirty.clear()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
