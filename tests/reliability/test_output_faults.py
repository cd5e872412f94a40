"""Where the output goes wrong: a reader that leaves at a random moment
(exit 141, quietly), paths that cannot be written (exit 2, one line, before
anything starts), and a disk that fills while metrics or a checkpoint are
written (exit 1, one line, no torn metrics line, no half checkpoint that
--resume accepts).

Running as root, "unwritable" is a read-only mount and "full" a 64 KiB
tmpfs, both made by the test (skipped, with the reason, where mounting is
not permitted); as another user, a directory without write permission
stands in for the read-only mount.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakerun import checkpoint
from tests.conftest import FAKERUN, SHORT_JOB, Job, Runner, job_processes, wait_until
from tests.reliability.conftest import Started, rng, seed_note, side_by_side, started_together

DISK = 64 * 1024
# torchrun's own log lines (its banner, "Sending process N closing signal"),
# glog-prefixed; under --nodes, behind the node's host.
TORCHRUN_LOG = re.compile(r"^([\w.-]+: )?[IWE]\d{4} [\d:.]+ \d+ torch/distributed/")
MOUNT_TIMEOUT = 10
READER_TIMEOUT_S = 30.0


def own_lines(stderr: str) -> list[str]:
    """What fakerun itself said on stderr, torchrun's log lines left out."""
    return [line for line in stderr.splitlines() if not TORCHRUN_LOG.match(line)]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(name, *options): a fresh tmpfs under tmp_path."""
    made: list[Path] = []

    def make(name: str, *options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
        target = tmp_path / name
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
                              capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
        if done.returncode:
            pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
        made.append(target)
        return target

    yield make
    for target in made:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=MOUNT_TIMEOUT)


@pytest.fixture
def unwritable(tmp_path: Path, mount) -> Path:
    """A directory we cannot write into, whoever we are."""
    if os.geteuid() == 0:
        return mount("read-only", "ro", "size=64k")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


# -- a reader that leaves -------------------------------------------------
READERS = {
    "plain": ("--nproc", "2"),
    "jsonl": ("--nproc", "2", "--output", "jsonl"),
    "nodes plain": ("--nodes", "2", "--no-theatre", "--nproc", "2"),
    "nodes jsonl": ("--nodes", "2", "--no-theatre", "--nproc", "2", "--output", "jsonl"),
}


def test_the_reader_leaves_at_a_random_moment(runner: Runner):
    """Like `fakerun | head -c N`: the pipe is closed after a random number
    of bytes; the job stops quietly with 141 and leaves nothing."""
    def once(i: int) -> tuple[str, int]:
        name, args = list(READERS.items())[i % len(READERS)]
        marker = runner.new_marker()
        proc = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, *args, *SHORT_JOB, "--speed", "16",
                                 "--max-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        size = rng(f"reader:{i}").randint(1, 6000)  # every variant prints that much within ~2 s
        where = f"{name}, reader gone after {size} bytes ({seed_note()})"
        deadline = threading.Timer(READER_TIMEOUT_S, proc.kill)  # the reads have no timeout of their own
        deadline.start()
        try:
            proc.stdout.read(size)
            proc.stdout.close()
            stderr = proc.stderr.read().decode(errors="replace")  # until the job closes it
            code = proc.wait(15)
        finally:
            deadline.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert code == 141, f"{where}: exit {code}\n{stderr[-2000:]}"
        assert not job_processes(marker), where
        assert not [line for line in own_lines(stderr) if line.strip()], f"{where}: not quiet\n{stderr}"
        return name, size

    done = side_by_side(once, len(READERS))
    print(f"reader gone: {done}")


# -- paths that cannot be written -----------------------------------------
@pytest.mark.parametrize("flag", ["--log-dir", "--metrics-file", "--output-dir"])
def test_an_unwritable_path_is_one_line_and_exit_2(runner: Runner, unwritable: Path, flag: str):
    target = unwritable / ("metrics.jsonl" if flag == "--metrics-file" else "sub")
    job = runner.run("--nproc", "2", "--max-steps", "3", "--speed", "0", flag, str(target), timeout=30)
    assert job.proc.returncode == 2, job.stderr
    assert job.stdout == ""  # nothing started
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fakerun: error: {flag} {target}"), lines
    assert not target.exists()


# -- a full disk ----------------------------------------------------------
def test_the_disk_fills_while_writing_metrics(runner: Runner, mount):
    """The disk fills at a random line (a filler of random size takes the
    rest): one error line, exit 1, and every line in the file is whole."""
    def once(i: int) -> None:
        disk = mount(f"metrics-disk-{i}", f"size={DISK}")
        (disk / "filler").write_bytes(b"\0" * rng(f"metrics-disk:{i}").randrange(DISK // 2))
        path = disk / "metrics.jsonl"
        job = runner.run("--nproc", "2", "--speed", "0", "--max-steps", "100000", "--metrics-file",
                         str(path), "--output", "jsonl", timeout=60)
        where = f"metrics disk {i} ({seed_note()})"
        assert job.proc.returncode == 1, f"{where}: {job.stderr[-2000:]}"
        assert own_lines(job.stderr) == [f"fakerun: error: --metrics-file {path}: No space left on device"]
        assert not job_processes(job.marker), where
        text = path.read_text()
        assert text.endswith("\n"), f"{where}: the file ends in a torn line: {text[-200:]!r}"
        rows = [json.loads(line) for line in text.splitlines()]  # every line whole
        steps = [r["step"] for r in rows if r["type"] == "train"]  # beside the events and evaluations
        assert steps == list(range(1, len(steps) + 1))

    side_by_side(once, 3)


def complete(ckpt: Path) -> bool:
    """Every file a checkpoint lists is there, and its state parses."""
    try:
        step = checkpoint.find(ckpt).step
        index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    except (checkpoint.CheckpointError, OSError, ValueError):
        return False
    shards = set(index["weight_map"].values())
    return step == int(ckpt.name.split("-")[1]) and all((ckpt / s).exists() for s in shards)


def resume_from(runner: Runner, out: Path, tmp: Path) -> Job:
    return runner.run("--nproc", "2", "--speed", "0", "--max-steps", "60", "--seed", "3", "--resume",
                      str(out), "--output-dir", str(tmp), "--output", "jsonl", timeout=60)


def test_the_disk_fills_while_writing_a_checkpoint(runner: Runner, mount, tmp_path: Path):
    """The disk fills at a random point of a save (a filler of random size):
    one error line, exit 1, no temporary directory left, every checkpoint
    on disk complete; --resume takes the latest complete one, or (none)
    refuses with exit 2."""
    def once(i: int) -> str:
        disk = mount(f"checkpoint-disk-{i}", f"size={DISK}")
        (disk / "filler").write_bytes(b"\0" * rng(f"checkpoint-disk:{i}").randrange(DISK // 2))
        out = disk / "out"
        job = runner.run("--nproc", "2", "--speed", "0", "--max-steps", "60", "--seed", "3",
                         "--output-dir", str(out), "--output", "jsonl", timeout=60)
        where = f"checkpoint disk {i} ({seed_note()})"
        assert job.proc.returncode == 1, f"{where}: {job.stderr[-2000:]}"
        assert own_lines(job.stderr) == [f"fakerun: error: --output-dir {out}: No space left on device"]
        assert not job_processes(job.marker), where
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], where  # no temp dirs
        saved = list(out.glob("checkpoint-*"))
        assert all(complete(c) for c in saved), where
        resumed = resume_from(runner, out, tmp_path / f"resumed-{i}")
        if not saved:
            assert resumed.proc.returncode == 2, f"{where}: {resumed.stderr}"
            assert re.fullmatch(r"fakerun: error: --resume .*: no complete checkpoint.*\n", resumed.stderr)
            return "refused (none complete)"
        latest = max(int(c.name.split("-")[1]) for c in saved)
        assert resumed.proc.returncode == 0, f"{where}: {resumed.stderr[-2000:]}"
        assert resumed.of("step")[0]["step"] == latest + 1, where
        return f"resumed from step {latest}"

    outcomes = side_by_side(once, 3)
    print(f"full disk mid-checkpoint: {outcomes}")



# -- odd files and closed streams (issue 16) ------------------------------
FIFO_TIMEOUT = 15.0  # the open used to block for ever: fail here instead
STALLED_STOP_S = 10.0  # signals.TAKE_WITHIN_S (2 s) and the teardown, with room on a busy machine


def test_a_fifo_where_a_file_belongs_is_one_line_at_once(runner: Runner, tmp_path: Path):
    """No reader on the FIFO: open(2) would block for ever (and SIGTERM
    only be recorded while it is retried). Refused before anything starts."""
    fifo = tmp_path / "metrics.fifo"
    os.mkfifo(fifo)
    job = runner.run("--nproc", "2", "--speed", "0", "--max-steps", "10", "--metrics-file", str(fifo),
                     timeout=FIFO_TIMEOUT)
    assert job.proc.returncode == 2, job.stderr
    assert job.stderr == f"fakerun: error: --metrics-file {fifo}: not a regular file (a FIFO)\n"


@pytest.mark.parametrize("flag", ["--log-dir", "--output-dir"])
@pytest.mark.parametrize("link", ["dangling", "loop", "inside a loop"])
def test_a_directory_behind_a_broken_symlink_is_one_line(runner: Runner, tmp_path: Path, flag: str, link: str):
    """mkdir on a dangling symlink is EEXIST, through a loop ELOOP: both
    were tracebacks from RunDir.create."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to("loop")
    target = {"dangling": tmp_path / "dangling", "loop": tmp_path / "loop",
              "inside a loop": tmp_path / "loop" / "logs"}[link]
    job = runner.run("--nproc", "2", "--speed", "0", "--max-steps", "3", flag, str(target), timeout=30)
    assert job.proc.returncode == 2, job.stderr
    lines = job.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fakerun: error: {flag} {target}: "), lines
    assert not (tmp_path / "nowhere").exists()


def test_the_disk_fills_while_writing_rank_logs(runner: Runner, mount):
    """--log-dir on a disk that fills (a filler of random size takes most
    of it): one error line, exit 1, nothing left; it was chained OSError
    tracebacks from the log files' flush and close."""
    def once(i: int) -> None:
        disk = mount(f"log-disk-{i}", f"size={DISK}")
        (disk / "filler").write_bytes(b"\0" * rng(f"log-disk:{i}").randrange(DISK // 2, DISK))
        logs = disk / "logs"
        job = runner.run("--nproc", "2", "--speed", "0", "--max-steps", "100000", "--log-dir", str(logs),
                         "--output", "jsonl", timeout=60)
        where = f"log disk {i} ({seed_note()})"
        assert job.proc.returncode == 1, f"{where}: {job.stderr[-2000:]}"
        assert own_lines(job.stderr) == [f"fakerun: error: --log-dir {logs}: No space left on device"], where
        assert not job_processes(job.marker), where

    side_by_side(once, 3)


@pytest.mark.parametrize("closed", [">&-", "2>&-"])
def test_a_stream_closed_from_the_start_is_exit_141(runner: Runner, tmp_path: Path, closed: str):
    """`fakerun >&-`: there never was a reader. As when one leaves: 141,
    quietly, nothing left (it was an AttributeError on None, exit 1)."""
    marker = runner.new_marker()
    other = tmp_path / "other-stream"
    shell = f'exec "$@" {closed} {"2" if closed == ">&-" else ""}>"$OTHER"'
    done = subprocess.run(["sh", "-c", shell, "sh", *FAKERUN, "--rdzv-id", marker, "--nproc", "2", "--speed",
                           "0", "--max-steps", "3"], env={**os.environ, "OTHER": str(other)},
                          stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 141
    assert other.read_text() == ""  # quietly: not a word on the stream that is open either
    assert not job_processes(marker)


def test_jsonl_says_nothing_once_its_reader_left(runner: Runner):
    """Under --output jsonl the events go to stdout and torchrun's lines to
    stderr: when stdout's reader leaves, stderr stays quiet too (no
    "Sending process N closing signal SIGTERM" for the teardown)."""
    marker = runner.new_marker()
    proc = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, "--nproc", "4", "--output", "jsonl", *SHORT_JOB,
                             "--speed", "16", "--max-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    deadline = threading.Timer(READER_TIMEOUT_S, proc.kill)  # the reads have no timeout of their own
    deadline.start()
    try:
        proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace")
        code = proc.wait(15)
    finally:
        deadline.cancel()
    assert code == 141, stderr
    assert "closing signal" not in stderr, stderr


def blocked_writing_to_a_pipe(pid: int) -> bool:
    """Where the process sleeps in the kernel (Linux): in a full pipe's write."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def stalled_reader(runner: Runner) -> float:
    """The job of test_a_stop_signal_ends_a_job_whose_reader_stalled: how
    long it took to stop."""
    marker = runner.new_marker()
    proc = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, "--nproc", "2", "--output", "jsonl", "--speed", "0",
                             "--max-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: blocked_writing_to_a_pipe(proc.pid), 30)
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(STALLED_STOP_S)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    assert code == 1  # torchrun's exit on a stop signal (its SignalException)
    assert not job_processes(marker)
    return took


@pytest.fixture(scope="module", autouse=True)
def started(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    """The stalled reader's job waits out the stop's deadline (2 s) asleep:
    it runs side by side with the module's other tests, from the first."""
    yield from started_together(request, tmp_path_factory, {
        "test_a_stop_signal_ends_a_job_whose_reader_stalled": stalled_reader})


def test_a_stop_signal_ends_a_job_whose_reader_stalled(started: dict[str, Started]):
    """The reader stops reading (a paused pager): the launcher blocks in
    write(2), which a recorded SIGTERM only retried, for ever. The stop now
    has a deadline: exit 1 (torchrun's) within seconds, nothing left."""
    took = started["test_a_stop_signal_ends_a_job_whose_reader_stalled"].result()
    print(f"stopped {took:.2f} s after SIGTERM with the reader stalled")
