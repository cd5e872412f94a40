"""`fakerun shims DIR`: `torchrun` and `nvidia-smi` on PATH, as tools call them."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from fakerun.cli import shims
from tests.conftest import wait_until

TIMEOUT = 30


def install(folder: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = shims.main([str(folder)], out, err)
    return code, out.getvalue(), err.getvalue()


def test_writes_both_executable_and_replaces_only_its_own(tmp_path):
    folder = tmp_path / "bin"
    code, out, err = install(folder)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == [f"wrote {folder / 'torchrun'}", f"wrote {folder / 'nvidia-smi'}"]
    for tool in shims.TOOLS:
        assert os.access(folder / tool, os.X_OK) and shims.is_shim(folder / tool)
    assert install(folder)[0] == 0  # its own shims: replaced
    (folder / "nvidia-smi").write_text("#!/bin/sh\necho the real one\n")
    before = (folder / "torchrun").read_bytes()
    code, out, err = install(folder)
    assert (code, out) == (1, "")
    assert err == f"fakerun shims: {folder / 'nvidia-smi'} exists and is not a fakerun shim: not replaced\n"
    assert (folder / "nvidia-smi").read_text() == "#!/bin/sh\necho the real one\n"
    assert (folder / "torchrun").read_bytes() == before  # nothing written: both or none
    assert sorted(p.name for p in folder.iterdir()) == ["nvidia-smi", "torchrun"]  # no temp left


def test_usage_errors_are_one_line_exit_2(tmp_path):
    for argv in ([], ["a", "b"], ["--bogus"]):
        out, err = io.StringIO(), io.StringIO()
        assert shims.main(argv, out, err) == 2
        assert out.getvalue() == "" and err.getvalue().count("\n") == 1
    out = io.StringIO()
    assert shims.main(["--help"], out, io.StringIO()) == 0 and "usage: fakerun shims DIR" in out.getvalue()
    (tmp_path / "file").write_text("")
    err = io.StringIO()
    assert shims.main([str(tmp_path / "file" / "bin")], io.StringIO(), err) == 1 and err.getvalue().count("\n") == 1


def tool_env(tmp_path: Path, folder: Path) -> dict[str, str]:
    """A caller's environment: the shims first on PATH, no PYTHONPATH (the shim
    names its fakerun itself), the test's own runtime directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XDG_RUNTIME_DIR")}
    return {**env, "PATH": f"{folder}:{env.get('PATH', '')}", "TMPDIR": str(tmp_path)}


def nvidia_smi(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nvidia-smi", *argv], env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_nvidia_smi_on_path_shows_the_running_job_then_an_idle_host(runner, tmp_path):
    folder = tmp_path / "bin"
    assert install(folder)[0] == 0
    env = tool_env(tmp_path, folder)
    idle = nvidia_smi(env, "--query-gpu=index,name", "--format=csv,noheader")
    assert idle.returncode == 0 and idle.stderr == "" and len(idle.stdout.splitlines()) == 8
    assert nvidia_smi(env, "--query-compute-apps=pid", "--format=csv,noheader").stdout == ""

    job = runner.start("--nproc", "2", "--max-steps", "100000", "--output", "jsonl", "--seed", "3",
                       env={**os.environ, "TMPDIR": str(tmp_path)})
    started = job.wait_for_event("rank_started", count=2)
    pids = sorted(e["pid"] for e in started)
    busy = wait_until(lambda: (r := nvidia_smi(env, "--query-gpu=index,name", "--format=csv,noheader"))
                      .stdout.count("\n") == 2 and r, TIMEOUT)
    assert [line.split(", ")[0] for line in busy.stdout.splitlines()] == ["0", "1"]
    apps = wait_until(lambda: (r := nvidia_smi(env, "--query-compute-apps=pid", "--format=csv,noheader"))
                      .stdout.count("\n") == 2 and r, TIMEOUT)
    assert sorted(int(pid) for pid in apps.stdout.split()) == pids  # the ranks are the processes
    assert "fakerun" not in busy.stdout + apps.stdout
    job.kill(signal.SIGTERM)
    job.wait(TIMEOUT)
    after = nvidia_smi(env, "-L")
    assert after.returncode == 0 and len(after.stdout.splitlines()) == 8  # idle again


def test_nvidia_smi_looping_into_head_leaves_quietly(tmp_path):
    folder = tmp_path / "bin"
    assert install(folder)[0] == 0
    proc = subprocess.Popen(["nvidia-smi", "-L", "-lms", "50"], env=tool_env(tmp_path, folder),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"GPU 0: ")
        proc.stdout.close()  # as `| head -1` does
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert (proc.returncode, err) == (141, b"")


def test_torchrun_on_path_is_fakerun_as_torchrun(runner, tmp_path):
    """Named `torchrun`, fakerun starts from torchrun's defaults: its demo's
    NCCL_DEBUG=INFO set-up lines are not there (README: "run fakerun as
    `torchrun` to start from torchrun's defaults")."""
    folder = tmp_path / "bin"
    assert install(folder)[0] == 0
    args = ("--nproc-per-node", "1", "--max-steps", "1", "--speed", "0", "--output", "plain", "--seed", "5")

    def nccl_lines(job) -> int:
        assert job.proc.returncode == 0, job.stderr[-2000:]
        return job.stdout.count("NCCL INFO")

    assert nccl_lines(runner.run(*args, env={**os.environ, "TMPDIR": str(tmp_path)})) > 0  # as fakerun
    assert nccl_lines(runner.run(*args, command=[str(folder / "torchrun")], env=tool_env(tmp_path, folder))) == 0


def test_a_shim_reads_as_a_console_script_in_ps(tmp_path):
    """`ps` shows `python /dir/nvidia-smi -l …`, as for an entry point pip
    writes: no `-c` code naming fakerun. An interpreter path a #! line cannot
    hold (a space in it) goes through sh, as pip's launcher does, to the same
    (that interpreter outside the venv: its packages from PYTHONPATH)."""
    spaced = tmp_path / "a python"
    spaced.mkdir()
    (spaced / "python3").symlink_to(os.path.realpath(sys.executable))
    packages = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))}
    for python, more in ((sys.executable, {}), (str(spaced / "python3"), packages)):
        folder = tmp_path / "bin"
        shims.write(folder, python)
        proc = subprocess.Popen(["nvidia-smi", "-L", "-l", "5"], env={**tool_env(tmp_path, folder), **more},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().startswith(b"GPU 0: "), proc.stderr
            cmdline = psutil.Process(proc.pid).cmdline()
        finally:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
        assert cmdline == [python, str(folder / "nvidia-smi"), "-L", "-l", "5"], cmdline
