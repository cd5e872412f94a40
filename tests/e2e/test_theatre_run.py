"""The real theatre: `fakerun --nodes 2` in a terminal (an outer tmux server
of the test's own, 80x24 or 200x50). Its panes show their node's ranks, the
dashboard updates, and Ctrl+C typed into the terminal ends everything: exit
130, the private tmux server and socket gone, no process left, the terminal
given back clean."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAKERUN, SHORT_STEPS, job_processes, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
TIMEOUT = 60
EXITED = "FAKERUN-EXITED"
FIELDS = ("id", "title", "window", "width", "height")


class Terminal:
    """An outer tmux server (the user's terminal) and the theatre inside it."""

    def __init__(self, cols: int, rows: int) -> None:
        self.marker = f"fakerun-test-{uuid.uuid4().hex[:12]}"
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.marker}-"))  # short: a socket lives here
        self.outer = f"fakerun-test-outer-{uuid.uuid4().hex[:8]}"
        self.size = (cols, rows)
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "NO_COLOR")}

    def start(self, *args: str) -> None:
        argv = [*FAKERUN, "--rdzv-id", self.marker, *args]
        command = (f"env -u XDG_RUNTIME_DIR TERM=xterm-256color TMPDIR={shlex.quote(str(self.tmpdir))} {shlex.join(argv)}; "
                   f"echo {EXITED} rc=$?; sleep 600")
        cols, rows = self.size
        conf = self.tmpdir / "outer.conf"
        conf.write_text("set -g status off\n")  # the pane is the whole terminal
        self.outer_cmd("-f", str(conf), "new-session", "-d", "-s", "t", "-x", str(cols), "-y", str(rows),
                       command)

    def outer_cmd(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.outer, *args], capture_output=True, text=True,
                              timeout=10, check=True, env=self.env).stdout

    def socket(self) -> Path | None:
        return next(self.tmpdir.glob("fakerun-*/theatre-*/tmux.sock"), None)

    def inner(self, *args: str) -> str:
        sock = wait_until(self.socket, TIMEOUT)
        return subprocess.run(["tmux", "-S", str(sock), *args], capture_output=True, text=True,
                              timeout=10, check=True, env=self.env).stdout

    def panes(self) -> dict[str, dict[str, str]]:
        """The theatre's panes by title, once they are all titled."""
        def read():
            out = self.inner("list-panes", "-a", "-F", "#{pane_id}\t#{@fakerun_title}\t#{window_index}"
                             "\t#{pane_width}\t#{pane_height}")
            panes = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]
            return {p["title"]: p for p in panes} if panes and all(p["title"] for p in panes) else None
        return wait_until(read, TIMEOUT)

    def pane_text(self, pane: dict[str, str]) -> str:
        return self.inner("capture-pane", "-p", "-J", "-S", "-", "-t", pane["id"])

    def screen(self) -> str:
        return self.outer_cmd("capture-pane", "-p", "-t", "t")

    def leftovers(self) -> list[psutil.Process]:
        """The job's processes: not the outer terminal's (its command line holds the marker too)."""
        return [p for p in job_processes(self.marker) if EXITED not in " ".join(p.info["cmdline"])]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.outer, "kill-server"], capture_output=True, timeout=10)
        for proc in job_processes(self.marker):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


@pytest.fixture
def terminal():
    made: list[Terminal] = []

    def make(cols: int, rows: int) -> Terminal:
        made.append(Terminal(cols, rows))
        return made[-1]

    yield make
    for t in made:
        t.close()


def hosts_of(text: str) -> set[str]:
    """The hosts named in NCCL lines: `[defaultN]:<host>:<pid>:<tid> [N] NCCL INFO`."""
    return set(re.findall(r"^\[default\d\]:([\w.-]+):\d+:\d+ \[\d\] NCCL", text, re.M))


@pytest.mark.parametrize("cols,rows", [(80, 24), (200, 50)])
def test_two_nodes_in_the_theatre_and_ctrl_c_ends_everything(terminal, cols, rows):
    term = terminal(cols, rows)
    term.start("--nodes", "2", "--nproc", "4", "--max-steps", "100000", *SHORT_STEPS, "--speed", "10")
    panes = term.panes()
    assert "nvidia-smi" in panes
    nodes = [p for title, p in panes.items()
             if title not in ("nvidia-smi", "lifeline") and "(summary)" not in title]
    assert len(nodes) == 2 and all(int(p["width"]) >= 60 and int(p["height"]) >= 10
                                   for p in nodes if p["window"] == "1")  # the visible ones readable
    if cols == 80:  # one node fits: node 1 runs in a window of its own, summarised on screen
        assert [p["window"] for p in nodes] == ["1", "2"]
        summary = panes[f"{nodes[1]['title']} (summary)"]
        assert summary["window"] == "1"
        wait_until(lambda: term.pane_text(summary).startswith(f"{nodes[1]['title']}   4 GPUs"), TIMEOUT)
    else:
        assert [p["window"] for p in nodes] == ["1", "1"]
    # Each node pane shows its own node's ranks (NCCL names its host), and
    # rank 0's training lines only on node 0.
    texts = [wait_until(lambda p=p: "Init COMPLETE" in (t := term.pane_text(p)) and t, TIMEOUT, 0.2)
             for p in nodes]
    assert [hosts_of(t) for t in texts] == [{nodes[0]["title"]}, {nodes[1]["title"]}]
    assert re.search(r"rank [4-7] nranks 8", texts[1]) and not re.search(r"rank [4-7] nranks 8", texts[0])
    wait_until(lambda: "Loss:" in term.pane_text(nodes[0]), TIMEOUT)
    assert "Loss:" not in term.pane_text(nodes[1])
    # The dashboard shows every GPU of both nodes and keeps changing.
    dash = panes["nvidia-smi"]
    first = wait_until(lambda: "NVIDIA" in (t := term.pane_text(dash)) and t, TIMEOUT)
    wait_until(lambda: term.pane_text(dash) != first, TIMEOUT)
    assert len(term.pane_text(dash).splitlines()) <= int(dash["height"])  # fitted: never scrolls
    # Ctrl+C typed into the terminal (the theatre's client forwards it).
    term.outer_cmd("send-keys", "-t", "t", "C-c")
    wait_until(lambda: f"{EXITED} rc=130" in term.screen(), TIMEOUT)
    wait_until(lambda: not term.leftovers(), 30)
    assert term.socket() is None and not list(term.tmpdir.glob("fakerun-*/theatre-*"))
    assert term.outer_cmd("display-message", "-p", "-t", "t", "#{alternate_on}#{cursor_flag}").strip() == "01"


def test_q_in_the_dashboard_ends_the_show(terminal):
    term = terminal(120, 40)
    term.start("--nodes", "2", "--nproc", "2", "--max-steps", "100000")
    dash = term.panes()["nvidia-smi"]
    wait_until(lambda: "NVIDIA" in term.pane_text(dash), TIMEOUT)
    term.outer_cmd("send-keys", "-t", "t", "q")  # the dashboard is the focused pane
    wait_until(lambda: f"{EXITED} rc=130" in term.screen(), TIMEOUT)  # the agents were interrupted
    wait_until(lambda: not term.leftovers(), 30)
    assert term.socket() is None


def test_a_job_that_ends_closes_the_show_with_its_exit_code(terminal):
    term = terminal(120, 40)
    term.start("--nodes", "2", "--nproc", "2", "--max-steps", "3", "--speed", "0")
    wait_until(lambda: f"{EXITED} rc=0" in term.screen(), TIMEOUT)
    wait_until(lambda: not term.leftovers(), 30)
    assert term.socket() is None
    assert term.outer_cmd("display-message", "-p", "-t", "t", "#{alternate_on}#{cursor_flag}").strip() == "01"
