"""`fakerun smi`: the command, in-process (main) and, for Ctrl+C, as a process."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fakerun.smi import GpuRow, Snapshot
from fakerun.smi.command import main
from fakerun.system.runtime import ensure, runtime_dir
from tests.conftest import wait_until

CTIME = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}       "


def snap(run_id: str = "job-1", nodes: int = 1, finished: bool = False, time: float = 1.0) -> Snapshot:
    gpus = [GpuRow(rank=n * 2 + i, node=n, index=i, host=f"gpu-node-{n:02d}", name="NVIDIA H100 80GB HBM3",
                   bus_id=f"00000000:{('18', '2A')[i]}:00.0", util=99, mem_used_mib=70000,
                   mem_total_mib=81559, temp_c=40 + n, power_w=600, power_cap_w=700, pid=1000 + n * 2 + i)
            for n in range(nodes) for i in range(2)]
    return Snapshot(time=time, run_id=run_id, driver="535.183.01", cuda="12.2",
                    process="/opt/conda/bin/python3", step=3, gpus=gpus, finished=finished)


def put(path: Path, snapshot: Snapshot) -> Path:
    """Written as the sink writes it: whole, by rename (a watcher never
    reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(snapshot.to_json())
    os.replace(temp, path)
    return path


def job_dir(tmp: Path, name: str, snapshot: Snapshot, owner: int | None = None) -> Path:
    """A running job's private dir, as the launcher leaves it."""
    folder = runtime(tmp) / f"job-{name}"
    put(folder / "smi.json", snapshot)
    (folder / "launcher.pid").write_text(f"{owner or os.getpid()}\n")
    return folder


def runtime(tmp: Path) -> Path:
    """The runtime dir of fakerun smi's environ={"TMPDIR": tmp}."""
    return ensure(runtime_dir({"TMPDIR": str(tmp)}))


def smi(*argv: str, tmp: Path, stdin=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, environ={"TMPDIR": str(tmp)}, stderr=err,
                stdin=stdin if stdin is not None else io.StringIO())
    return code, out.getvalue(), err.getvalue()


def test_once_from_a_file(tmp_path):
    path = put(tmp_path / "s.json", snap())
    code, out, err = smi("--file", str(path), tmp=tmp_path)
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert re.fullmatch(CTIME, lines[0])
    assert lines[2].startswith("| NVIDIA-SMI 535.183.01 ") and len(lines) == 25
    assert lines[-2] == ("|    1   N/A  N/A      1001      C   /opt/conda/bin/python3"
                         "                    69992MiB |")


def test_compact_and_nodes_from(tmp_path):
    path = put(tmp_path / "s.json", snap(nodes=3))
    code, out, _ = smi("--file", str(path), "--compact", tmp=tmp_path)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "gpu-node-00", "gpu-node-01", "gpu-node-02"]
    code, out, _ = smi("--file", str(path), "--compact", "--nodes-from", "2", tmp=tmp_path)
    assert out == "gpu-node-02   2 GPUs  util  99%  mem  136.7/159.3 GiB  power  1200 W  max 42C\n"
    code, out, _ = smi("--file", str(path), "--nodes-from", "1", tmp=tmp_path)
    assert [line for line in out.splitlines() if line.startswith("==>")] == [
        "==> gpu-node-01 <==", "==> gpu-node-02 <=="]


def test_no_job_found(tmp_path):
    job_dir(tmp_path, "dead", snap(), owner=2**22 + 12345)  # no such pid: a job that is over
    assert smi(tmp=tmp_path) == (1, "", "fakerun smi: no running fakerun job found\n")
    assert smi("--job", "nope", tmp=tmp_path)[2] == \
        "fakerun smi: no running fakerun job found with run id 'nope'\n"
    code, _, err = smi("--file", str(tmp_path / "absent.json"), tmp=tmp_path)
    assert code == 1 and err.count("\n") == 1


def test_finds_the_running_job_and_picks_by_run_id(tmp_path):
    job_dir(tmp_path, "a", snap("job-a", time=1.0))
    job_dir(tmp_path, "b", snap("job-b", time=2.0))
    (runtime(tmp_path) / "job-c").mkdir()  # being created: no launcher.pid yet
    code, out, err = smi("--compact", tmp=tmp_path)
    assert code == 0 and err == ("fakerun smi: 2 running jobs; showing the newest, job-b "
                                 "(others: job-a; pick one with --job)\n")
    code, out, err = smi("--job", "job-a", tmp=tmp_path)
    assert (code, err) == (0, "") and "NVIDIA-SMI" in out


@pytest.mark.parametrize("argv", [["--bogus"], ["--loop", "0"], ["-l", "x"], ["--nodes-from", "-1"],
                                  ["--file", "a", "--job", "b"]])
def test_bad_args_are_one_line_and_exit_2(tmp_path, argv):
    code, out, err = smi(*argv, tmp=tmp_path)
    assert (code, out) == (2, "") and err.startswith("fakerun smi: error: ") and err.count("\n") == 1


def test_help_goes_to_stdout(tmp_path):
    code, out, err = smi("--help", tmp=tmp_path)
    assert (code, err) == (0, "") and "--nodes-from" in out


def test_bad_snapshot_is_one_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"v": 1}')
    code, out, err = smi("--file", str(path), tmp=tmp_path)
    assert (code, out) == (1, "") and err == f"fakerun smi: {path}: snapshot field 'gpus' should be a non-empty list\n"


def test_watch_ends_when_the_job_finishes(tmp_path):
    path = put(tmp_path / "s.json", snap(finished=True))
    code, out, err = smi("--file", str(path), "--watch", tmp=tmp_path)
    assert (code, err) == (0, "") and out.splitlines()[-1] == "fakerun smi: job job-1 finished"
    assert "\x1b" not in out  # not a terminal: no cursor codes


class Watch:
    """main(--watch) on a thread, so the test can change the world meanwhile."""

    def __init__(self, *argv: str, tmp: Path, stdin=None) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(list(argv), tmp, stdin), daemon=True)
        self.thread.start()

    def _run(self, argv, tmp, stdin) -> None:
        self.code = main(argv, stdout=self.out, environ={"TMPDIR": str(tmp)}, stderr=self.err,
                         stdin=stdin if stdin is not None else io.StringIO())

    def join(self, timeout: float = 10) -> int | None:
        self.thread.join(timeout)
        return self.code


def test_watch_redraws_on_change_and_ends_when_the_snapshot_disappears(tmp_path):
    folder = job_dir(tmp_path, "w", snap("job-w"))
    watch = Watch("--compact", "-l", "0.02", tmp=tmp_path)
    wait_until(lambda: "max 40C" in watch.out.getvalue(), 10)
    put(folder / "smi.json", dataclasses.replace(snap("job-w"), step=4, gpus=[
        dataclasses.replace(g, temp_c=77) for g in snap().gpus]))
    wait_until(lambda: "max 77C" in watch.out.getvalue(), 10)
    (folder / "smi.json").unlink()
    assert watch.join() == 0
    assert watch.out.getvalue().splitlines()[-1] == "fakerun smi: job job-w ended"


def test_watch_on_a_terminal_quits_on_q_and_restores_it(tmp_path):
    path = put(tmp_path / "s.json", snap())
    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stdin:
        before = termios.tcgetattr(slave)
        watch = Watch("--file", str(path), "--watch", "-l", "30", tmp=tmp_path, stdin=stdin)
        wait_until(lambda: "NVIDIA-SMI" in watch.out.getvalue(), 10)
        wait_until(lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, 10)  # cbreak
        os.write(master, b"q")
        assert watch.join() == 0
        assert termios.tcgetattr(slave) == before
    os.close(master)


def test_ctrl_c_exits_130_quietly(tmp_path):
    path = put(tmp_path / "s.json", snap())
    code = "import sys; from fakerun.smi.command import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--file", str(path), "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: select.select([proc.stdout], [], [], 0)[0], 10)  # the first frame is out
        assert proc.stdout.readline().strip()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == b""


def test_wait_shows_the_job_once_it_starts(tmp_path):
    watch = Watch("--job", "job-late", "--wait", "--compact", "-l", "0.02", tmp=tmp_path)
    wait_until(lambda: "waiting for job job-late to start (q quits)" in watch.out.getvalue(), 10)
    job_dir(tmp_path, "other", snap("job-other"))  # another job's snapshot is not the one awaited
    folder = job_dir(tmp_path, "late", snap("job-late"))
    wait_until(lambda: "gpu-node-00" in watch.out.getvalue(), 10)
    (folder / "smi.json").unlink()
    assert watch.join() == 0 and watch.err.getvalue() == ""


def test_wait_gives_up_on_q(tmp_path):
    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stdin:
        watch = Watch("--wait", "-l", "30", tmp=tmp_path, stdin=stdin)
        wait_until(lambda: "waiting for a fakerun job" in watch.out.getvalue(), 10)
        wait_until(lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, 10)
        os.write(master, b"q")
        assert watch.join() == 0
    os.close(master)


def test_hold_keeps_the_last_table_until_q(tmp_path):
    path = put(tmp_path / "s.json", snap(finished=True))
    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stdin:
        watch = Watch("--file", str(path), "--hold", tmp=tmp_path, stdin=stdin)
        wait_until(lambda: watch.out.getvalue().endswith("fakerun smi: job job-1 finished (q quits)\n"), 10)
        watch.thread.join(0.2)
        assert watch.thread.is_alive()  # held: still showing the table
        os.write(master, b"x")
        watch.thread.join(0.2)
        assert watch.thread.is_alive()  # only q ends it
        os.write(master, b"q")
        assert watch.join() == 0 and "NVIDIA-SMI" in watch.out.getvalue()
    os.close(master)


def test_wait_hold_follows_the_jobs_next_run(tmp_path):
    """The theatre's dashboard under --loop: each run ends (finished, then its
    dir removed) and the next, under the same run id, takes over."""
    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stdin:
        watch = Watch("--job", "job-l", "--wait", "--hold", "--compact", "-l", "0.02", tmp=tmp_path, stdin=stdin)
        first = job_dir(tmp_path, "run1", snap("job-l", finished=True))
        wait_until(lambda: "job job-l finished (q quits)" in watch.out.getvalue(), 10)
        for path in first.iterdir():
            path.unlink()
        first.rmdir()
        job_dir(tmp_path, "run2", dataclasses.replace(snap("job-l"), gpus=[
            dataclasses.replace(g, temp_c=71) for g in snap().gpus]))
        wait_until(lambda: "max 71C" in watch.out.getvalue(), 10)
        assert watch.thread.is_alive()
        os.write(master, b"q")
        assert watch.join() == 0 and watch.err.getvalue() == ""
    os.close(master)


def test_watch_prints_the_last_frame_once_then_the_end(tmp_path):
    path = put(tmp_path / "s.json", snap("job-once", finished=True))
    code, out, err = smi("--file", str(path), "--watch", "--compact", tmp=tmp_path)
    assert (code, err) == (0, "")
    assert out == ("gpu-node-00   2 GPUs  util  99%  mem  136.7/159.3 GiB  power  1200 W  max 40C\n"
                   "fakerun smi: job job-once finished\n")


def _read_pty(master: int, until: Callable[[bytes], bool], timeout: float = 10) -> bytes:
    """Everything the terminal received, until `until` holds or the process closed it."""
    got = b""
    deadline = time.monotonic() + timeout
    while not until(got) and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            got += chunk
    return got


def test_quitting_a_watch_leaves_the_prompt_on_a_line_of_its_own(tmp_path):
    """Issue 21: `fakerun smi --watch`, then q, left the shell's prompt glued to the last line
    (a frame ends without a newline, so that a full screen does not scroll)."""
    path = put(tmp_path / "s.json", snap())
    master, slave = os.openpty()
    termios.tcsetwinsize(slave, (24, 100))  # a new pty is 0 x 0: a frame would be cut to nothing
    code = "import sys; from fakerun.smi.command import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--file", str(path), "--watch", "--compact"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        seen = _read_pty(master, lambda got: b"gpu-node-00" in got)
        assert b"gpu-node-00" in seen
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
        seen += _read_pty(master, lambda got: False, timeout=2)
    finally:
        proc.kill()
        proc.wait(10)
        os.close(master)
    frame_end = seen.rindex(b"\x1b[J")  # the last frame's "clear below"
    assert seen[frame_end + 3:] == b"\r\n"  # then a fresh line for the prompt


def test_nvidia_smi_options_read_the_newest_job_and_say_so_when_there_is_none(tmp_path):
    assert smi("-L", tmp=tmp_path) == (1, "", "fakerun smi: no running fakerun job found\n")
    job_dir(tmp_path, "a", snap("job-a", nodes=2))
    code, out, err = smi("--query-gpu=index,name,memory.used", "--format=csv,noheader", tmp=tmp_path)
    assert (code, err) == (0, "")
    assert out == "0, NVIDIA H100 80GB HBM3, 70000 MiB\n1, NVIDIA H100 80GB HBM3, 70000 MiB\n"  # node 0's
