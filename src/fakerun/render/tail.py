"""What torchrun's tee makes of a rank's stream: torch's TailLog
(torch/distributed/elastic/multiprocessing/tail_log.py, tail_logfile, the
same in torch 2.3.1, 2.4.1, 2.5.1 and 2.9.1) reads the rank's log file with
open()'s universal newlines and writes `header + line` for each readline().
So `\\r`, `\\n` and `\\r\\n` each end a line (a tqdm redraw is a line of its
own), and when the reader catches up with the writer mid-line, readline()
returns what there is without a newline: the header of the next read follows
it on the same console line (`[default0]: 45%|...| 9/20 [...][default0]:`).

The reader polls every 0.1 s (TailLog's interval_sec), no faster than tqdm
redraws (its mininterval): it is taken to catch up after each batch of
writes a rank makes at one moment, and never in the middle of one."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A line as universal newlines end it; a lone `\r` at the end of what was
# written waits for the next character (it may be a `\r\n`).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r(?=.)|\r$)", re.DOTALL)


@dataclass
class TailedFile:
    """One rank stream's log file as its TailLog thread prints it."""

    header: str
    unread: str = ""  # written, not yet returned by a readline() that found its newline

    def written(self, text: str) -> str:
        """What the reader prints of `text` while the writer goes on: the
        lines it completes, each with the header; the rest waits."""
        self.unread += text
        out, at = [], 0
        for match in _LINE.finditer(self.unread):
            line = match.group()
            if line.endswith("\r") and match.end() == len(self.unread):
                break  # a `\r` with nothing after it yet
            out.append(f"{self.header}{line.rstrip(chr(13) + chr(10))}\n")
            at = match.end()
        self.unread = self.unread[at:]
        return "".join(out)

    def caught_up(self) -> str:
        """The reader at the end of the file: a trailing `\\r` ends a line
        (the decoder's final flush), and a partial line is printed as it is."""
        rest, self.unread = self.unread, ""
        if not rest:
            return ""
        return f"{self.header}{rest[:-1]}\n" if rest.endswith("\r") else f"{self.header}{rest}"
