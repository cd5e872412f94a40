"""The theatre (fakerun.theatre.run) in a real terminal: a driver runs it in
a pane of an outer tmux server (its own socket, 80x24 or 200x50), with fake
node agents, dashboard and summary (fakes.py). Keys reach the theatre the
way a user's do: through the outer pane, into the theatre's attach client.
After every test: the driver has exited, nothing it started is left, and
its private socket directory is gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import job_processes, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
FAKES = str(Path(__file__).with_name("fakes.py"))
EXITED = "THEATRE-EXITED"
TIMEOUT = 30
SOCKET_DIRS = "fakerun-*/theatre-*"  # in the runtime dir of TMPDIR=tmpdir
SOCKETS = f"{SOCKET_DIRS}/tmux.sock"


class Theatre:
    """One theatre run under test, and the outer terminal it runs in."""

    def __init__(self, tmp_path: Path, cols: int, rows: int) -> None:
        self.tmp, self.size = tmp_path, (cols, rows)
        self.marker = f"fakerun-test-{uuid.uuid4().hex[:12]}"
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.marker}-"))  # short: a socket lives here
        self.outer = f"fakerun-test-outer-{uuid.uuid4().hex[:8]}"
        self.log, self.rc_file, self.pid_file = tmp_path / "log", tmp_path / "rc", tmp_path / "pid"

    def node(self, title: str, *extra: str, env: dict[str, str] | None = None) -> dict:
        argv = [sys.executable, FAKES, "node", str(self.log), title, self.marker, *extra]
        return {"title": title, "argv": argv, "env": env or {}}

    def start(self, nodes: list[dict], *dashboard: str, summary: bool = True, grace: float = 10,
              dashboard_argv: list[str] | None = None) -> None:
        """`dashboard`: the fake dashboard's options; `dashboard_argv`: another dashboard."""
        spec = {"tmpdir": str(self.tmpdir), "name": f"fakerun-{self.marker[-6:]}",
                "rc_file": str(self.rc_file), "pid_file": str(self.pid_file), "grace": grace,
                "nodes": nodes, "summary": [sys.executable, FAKES, "summary", "{K}", self.marker]
                if summary else None,
                "dashboard": {"title": "dashboard", "argv": dashboard_argv or [
                    sys.executable, FAKES, "dashboard", str(self.log), self.marker, *dashboard]}}
        (self.tmp / "spec.json").write_text(json.dumps(spec))
        (self.tmp / "outer.conf").write_text("set -g status off\n")  # the pane is the whole terminal
        cols, rows = self.size
        command = f"{sys.executable} {FAKES} stage {self.tmp / 'spec.json'}; echo {EXITED}; sleep 600"
        self.outer_cmd("-f", str(self.tmp / "outer.conf"), "new-session", "-d", "-s", "t",
                       "-x", str(cols), "-y", str(rows), command)

    def outer_cmd(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        return subprocess.run(["tmux", "-L", self.outer, *args], capture_output=True, text=True,
                              timeout=10, check=True, env=env).stdout

    def socket(self) -> str:
        return str(wait_until(lambda: next(self.tmpdir.glob(SOCKETS), None), TIMEOUT))

    def inner(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        return subprocess.run(["tmux", "-S", self.socket(), *args], capture_output=True, text=True,
                              timeout=10, check=True, env=env).stdout

    def panes(self) -> list[dict]:
        """The theatre's panes, once they are all titled."""
        fields = ("window", "id", "title", "width", "height", "top")
        def read():
            try:
                out = self.inner("list-panes", "-a", "-F", "#{window_index}\t#{pane_id}\t#{@fakerun_title}"
                                 "\t#{pane_width}\t#{pane_height}\t#{pane_top}")
            except subprocess.CalledProcessError:  # the socket exists before its server listens
                return None
            panes = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
            return panes if panes and all(p["title"] for p in panes) else None
        return wait_until(read, TIMEOUT)

    def pane(self, title: str) -> dict:
        return next(p for p in self.panes() if p["title"] == title)

    def keys(self, *keys: str) -> None:
        self.outer_cmd("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.outer_cmd("capture-pane", "-p", "-t", "t")

    def shows(self, text: str) -> str:
        return wait_until(lambda: text in (s := self.screen()) and s, TIMEOUT)

    def logged(self, *lines: str) -> None:
        wait_until(lambda: self.log.exists() and set(lines) <= set(self.log.read_text().splitlines()),
                   TIMEOUT)

    def rc(self) -> int:
        return int(wait_until(lambda: self.rc_file.exists() and self.rc_file.read_text(), TIMEOUT))

    def driver_pid(self) -> int:
        return int(wait_until(lambda: self.pid_file.exists() and self.pid_file.read_text(), TIMEOUT))

    def leftovers(self) -> list[psutil.Process]:
        return job_processes(self.marker)

    def assert_clean(self) -> None:
        driver = self.driver_pid()
        wait_until(lambda: not psutil.pid_exists(driver), TIMEOUT)  # run() returned, or was killed
        assert not self.leftovers(), f"left behind: {self.leftovers()}"
        assert not list(self.tmpdir.glob(SOCKET_DIRS)), "the private socket directory is still there"
        # The terminal is given back clean: the main screen, the cursor shown.
        wait_until(lambda: self.outer_cmd("display-message", "-p", "-t", "t",
                                          "#{alternate_on}#{cursor_flag}").strip() == "01", TIMEOUT)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.outer, "kill-server"], capture_output=True, timeout=10)
        for proc in self.leftovers():
            proc.kill()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


@pytest.fixture
def theatre(tmp_path):
    """Makes one Theatre; after the test, asserts its driver exited and that
    none of its processes, and not its private directory, is left."""
    made: list[Theatre] = []

    def make(cols: int = 200, rows: int = 50) -> Theatre:
        made.append(Theatre(tmp_path, cols, rows))
        return made[-1]

    yield make
    try:
        for t in made:
            t.assert_clean()
    finally:
        for t in made:
            t.close()


@pytest.mark.parametrize("cols,rows", [(80, 24), (200, 50)])
def test_titled_node_panes_and_ctrl_c_in_a_node_pane_ends_everything(theatre, cols, rows):
    t = theatre(cols, rows)
    t.start([t.node("node-a", "--child", env={"FAKE_TOKEN": "s3cret"}), t.node("node-b")])
    panes = t.panes()
    assert sorted(p["title"] for p in panes) == sorted(
        ["lifeline", "node-a", "node-b", "dashboard"] + (["summary"] if cols == 80 else []))
    shown = {p["title"] for p in panes if p["window"] == "1"}
    if cols == 80:  # one node slot: node 0, a summary strip, the dashboard; node-b out of sight
        assert shown == {"node-a", "summary", "dashboard"}
        t.shows("summary: nodes 1..")
    else:
        assert shown == {"node-a", "node-b", "dashboard"}
        assert all(int(p["width"]) >= 60 and int(p["height"]) >= 10 for p in panes if p["title"].startswith("node"))
    screen = t.shows("node-a: agent up, token s3cret")  # the env reached the agent...
    assert "─ node-a ─" in screen and "─ dashboard ─" in screen
    for proc in psutil.process_iter(["cmdline"]):  # ...through no command line
        assert "s3cret" not in " ".join(proc.info["cmdline"] or [])
    t.logged("node-a up", "node-b up", "dashboard up")  # every node runs, shown or not
    t.inner("select-pane", "-t", t.pane("node-a")["id"])
    t.keys("C-c")
    assert t.rc() == 130
    t.logged("node-a sigint", "node-b sigint")
    assert "[exited]" in t.shows(EXITED)  # what tmux prints when its session ends


def test_q_in_the_dashboard_ends_everything(theatre):
    t = theatre()
    t.start([t.node("node-a"), t.node("node-b")])
    t.panes()
    t.logged("node-a up", "node-b up", "dashboard up")
    t.inner("select-pane", "-t", t.pane("dashboard")["id"])
    t.keys("q")
    assert t.rc() == 130  # the theatre's own code for being quit (its agents exit 1, as torchrun)
    t.logged("dashboard q", "node-a sigint", "node-b sigint")


def test_a_failed_node_holds_the_panes_until_a_key(theatre):
    t = theatre()
    t.start([t.node("node-a", "--after", "0.5"), t.node("node-b", "--after", "1", "--exit", "3")])
    screen = t.shows("job failed (exit 3): press any key to close")
    assert "node-a: exiting 0" in screen and "node-b: exiting 3" in screen  # still readable
    assert not t.rc_file.exists()
    t.keys("x")
    assert t.rc() == 3
    assert "sigint" not in t.log.read_text()


def test_a_job_that_fails_before_the_dashboard_finds_it_is_shown_failed(theatre):
    """The real dashboard (`fakerun smi --wait --hold`, as launcher/cluster.py
    starts it) of a job gone before its first poll: it said "waiting for job …
    to start" under the failure banner."""
    t = theatre(120, 30)
    smi = [sys.executable, "-m", "fakerun", "smi", "--job", "job-gone", "--wait", "--hold"]
    t.start([t.node("node-a", "--after", "0.2", "--exit", "1"), t.node("node-b", "--after", "0.2")],
            dashboard_argv=smi)
    t.shows("job failed (exit 1): press any key to close")
    t.shows("fakerun smi: job job-gone failed (exit 1) before its GPUs could be read (q quits)")
    assert "waiting for job" not in t.screen()
    t.keys("x")
    assert t.rc() == 1


def test_a_clean_end_closes_the_show_with_0(theatre):
    t = theatre(80, 24)
    # The dashboard ends with the job, as `fakerun smi --watch` does: not a quit.
    t.start([t.node("node-a", "--after", "1"), t.node("node-b", "--after", "1")], "--after", "1")
    assert t.rc() == 0
    assert "sigint" not in t.log.read_text()


def test_more_nodes_than_fit_show_a_summary_and_all_run(theatre):
    t = theatre(80, 24)
    t.start([t.node(f"node-{i}") for i in range(4)])
    panes = t.panes()
    assert [p["title"] for p in sorted((p for p in panes if p["window"] == "1"), key=lambda p: int(p["top"]))] \
        == ["node-0", "summary", "dashboard"]
    assert sorted(p["title"] for p in panes if p["window"] not in ("0", "1")) == ["node-1", "node-2", "node-3"]
    t.shows("summary: nodes 1.. run out of sight")
    t.logged(*(f"node-{i} up" for i in range(4)))
    t.keys("C-c")
    assert t.rc() == 130
    t.logged(*(f"node-{i} sigint" for i in range(4)))


def test_an_agent_that_ignores_sigint_is_killed_after_the_grace(theatre):
    t = theatre()
    t.start([t.node("node-a"), t.node("node-b", "--stubborn", "--child")], grace=1)
    t.panes()
    t.logged("node-a up", "node-b up")
    t.keys("C-c")
    assert t.rc() == 130
    t.logged("node-b sigint")  # it got the SIGINT, ignored it, and was killed with its child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_theatre_ends_everything(theatre, sig):
    t = theatre()
    t.start([t.node("node-a"), t.node("node-b")])
    t.panes()
    t.logged("node-a up", "node-b up")
    os.kill(t.driver_pid(), sig)
    assert t.rc() == 128 + sig
    t.logged("node-a sigint", "node-b sigint")


def test_sigkill_of_the_theatre_still_ends_everything(theatre):
    t = theatre()
    t.start([t.node("node-a", "--child"), t.node("node-b")])
    t.panes()
    t.logged("node-a up", "node-b up")
    os.kill(t.driver_pid(), signal.SIGKILL)
    # The lifeline pane ends the tmux server and removes the directory; the
    # agents go with the server's SIGHUP, or on seeing FAKERUN_LIFELINE gone.
    wait_until(lambda: not t.leftovers() and not list(t.tmpdir.glob(SOCKET_DIRS)), TIMEOUT)
    assert not t.rc_file.exists()
    t.shows("[server exited]")


def test_available_says_why_not():
    from io import StringIO

    from fakerun.theatre import available

    assert "tmux" in available(StringIO(), {"PATH": "/nonexistent"})
    assert "not a terminal" in available(StringIO(), dict(os.environ))
    with open(os.devnull, "w") as devnull:
        assert "not a terminal" in available(devnull, dict(os.environ))


def test_a_runtime_dir_it_cannot_trust_is_one_line_and_exit_2(tmp_path, capsys):
    from fakerun import theatre

    (tmp_path / f"fakerun-{os.geteuid()}").mkdir(mode=0o700)
    (tmp_path / f"fakerun-{os.geteuid()}").chmod(0o755)
    pane = theatre.Pane("node", ["true"])
    stage = theatre.Stage(nodes=[pane], dashboard=pane, summary=None, name="x")
    environ = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    assert theatre.run(stage, environ, size=theatre.Size(80, 24)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"fakerun: error: {tmp_path}/fakerun-{os.geteuid()} is open to other users "
                                 "(mode 0755): chmod 700 it, or set TMPDIR or XDG_RUNTIME_DIR elsewhere\n")
