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
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakerun import checkpoint
from tests.conftest import FAKERUN, Job, Runner, job_processes
from tests.reliability.conftest import rng, seed_note, side_by_side

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
        proc = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, *args, "--speed", "2", "--max-steps",
                                 "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
        assert [r["step"] for r in rows if r["type"] == "train"] == list(range(1, len(rows)))

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

