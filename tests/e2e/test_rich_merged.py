"""`--output rich --nodes 1 --no-theatre` on a terminal: the agents write to
the merging launcher's pipes, where the live footer has no screen to live
on; it used to land in the scrollback, escape codes and all (issue 21)."""

from __future__ import annotations

import re
import sys

from tests.conftest import FAKERUN

# The launcher on a terminal, as a user's shell starts it: pty.spawn copies
# what the terminal gets into the runner's output file.
ON_A_TERMINAL = [sys.executable, "-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)", *FAKERUN]
FOOTER = re.compile(r"step \d+/\d+ · ")


def test_merged_rich_output_keeps_the_footer_out_of_the_scrollback(runner):
    job = runner.run("--output", "rich", "--nodes", "1", "--no-theatre", "--nproc", "2", "--max-steps", "4",
                     "--speed", "0", "--seed", "2", "--start-time", "2026-01-01T00:00:00",
                     command=ON_A_TERMINAL, timeout=60)
    assert job.proc.returncode == 0
    out = job.stdout
    assert "Training Summary" in out  # the run's lines came through
    for erase in ("\x1b[J", "\x1b[?25l", "\x1b[?25h"):
        assert erase not in out
    assert not FOOTER.search(out)
    host = re.match(r"([\w-]+): ", out).group(1)
    lines = [line for line in out.replace("\r\n", "\n").split("\n") if line]
    assert all(line.startswith(f"{host}: ") for line in lines)  # no line cut by an erase
