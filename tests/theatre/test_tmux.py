"""The rich view in a real terminal (tmux): footer while running, gone after
exit, cursor back, no broken lines, at 80 and 160 columns."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import FAKERUN, SHORT_STEPS, gone, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
FOOTER = re.compile(r"\d+% step \d+/\d+")
DONE = "FAKERUN-EXITED"
WHOLE = re.compile(r"^(\[default\d+\]:|[WE]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ )")


class Tmux:
    def __init__(self, width: int, height: int) -> None:
        self.socket = f"fakerun-test-{uuid.uuid4().hex[:8]}"  # a private server, never the user's
        self.size = (width, height)

    def cmd(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def start(self, command: str) -> None:
        w, h = self.size
        self.cmd("new-session", "-d", "-s", "t", "-x", str(w), "-y", str(h), command)

    def screen(self, joined: bool = False) -> list[str]:
        """The visible rows; `joined` rejoins lines the terminal wrapped."""
        return self.cmd("capture-pane", "-p", *(["-J"] if joined else []), "-t", "t").splitlines()

    def cursor_visible(self) -> bool:
        return self.cmd("display-message", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"

    def kill(self) -> None:
        """Ends the server and waits for it to be gone: its command line names
        the job, so the runner would count a server still exiting as left behind."""
        pid = subprocess.run(["tmux", "-L", self.socket, "display-message", "-p", "#{pid}"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if pid.isdigit():
            wait_until(lambda: gone(int(pid)), 10)


@pytest.mark.parametrize("width", [80, 160])
def test_live_footer_in_a_terminal(runner, width):
    marker = runner.new_marker()
    # ~240 s of simulated work (2.2 s steps, a validation, a checkpoint, the export): ~4 s of wall,
    # the footer redrawn at each of the 40 steps (at --speed 25 the same redraws took ~9.5 s).
    cmd = " ".join(shlex.quote(a) for a in [*FAKERUN, "--rdzv-id", marker, "--nproc", "4",
                                             "--max-steps", "40", *SHORT_STEPS, "--speed", "60"])
    term = Tmux(width, 40)
    term.start(f"env -u NO_COLOR TERM=xterm-256color {cmd}; echo {DONE}; sleep 120")
    try:
        running = wait_until(lambda: [x for x in term.screen() if FOOTER.search(x)], 60)
        assert not term.cursor_visible()
        assert "step" in running[-1]
        wait_until(lambda: any(DONE in x for x in term.screen()), 120)
        final = term.screen(joined=True)
        body = [x for x in final if x.strip() and DONE not in x]
        assert not any(FOOTER.search(x) for x in final), "the footer must be gone after exit"
        assert any("Training Summary" in x for x in body)
        # Whole lines only: no footer debris, no line cut by a redraw.
        for line in body[1:]:  # the first row may be the tail of a scrolled-off line
            assert WHOLE.match(line), line
        # The live parts (step blocks, the GPU grid) reflow to the width instead of wrapping.
        live = [x for x in body if x.startswith("[default0]:  ") or any(c in x for c in "┌│└")]
        assert live and all(len(x) <= width for x in live), [x for x in live if len(x) > width]
        assert term.cursor_visible()
    finally:
        term.kill()
