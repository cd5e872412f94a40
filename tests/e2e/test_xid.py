"""The Xid scenarios end to end, one run per family (a GPU lost, an ECC
error): the node's kernel log under --log-dir names the failing rank's GPU
as nvidia-smi does (its bus id) and, where the driver knows it, its pid; the
rank dies of the CUDA error the driver gives; exit 1; nothing left."""

from __future__ import annotations

import re

import pytest

H100 = "NVIDIA H100 80GB HBM3"
BUS = "2a"  # data/gpus.txt: the H100 board's second GPU, rank 1's
RUN = ("--nproc", "2", "--max-steps", "6", "--speed", "0", "--seed", "3", "--gpu", H100, "--fail-rank", "1",
       "--fail-step", "3", "--output", "jsonl", "--start-time", "2026-01-30T14:23:15")
STAMP = r"Jan 30 14:2\d:\d\d {host} kernel: \[ *\d+\.\d{{6}}\] "


@pytest.mark.parametrize(("scenario", "xid_line", "error", "logged", "attempts"), [
    ("gpu-fallen-off-bus", "79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.", "unknown error",
     ["79"], 2),
    ("ecc-contained", "94, pid={pid}, name=pt_main_thread, Contained: FB DED (", "uncorrectable ECC error encountered",
     ["48", "94", "63"], 1),
])
def test_an_xid_is_logged_by_the_nodes_kernel_and_fails_the_rank(runner, tmp_path, scenario, xid_line, error,
                                                                  logged, attempts):
    """A lost GPU is lost for the restarted attempt too: its rank fails
    again, at its first step, and the driver logs no second Xid 79."""
    logs = tmp_path / "logs"
    job = runner.run(*RUN, "--scenario", scenario, "--log-dir", str(logs), "--max-restarts", str(attempts - 1))
    assert job.proc.returncode == 1, job.stderr[-2000:]
    assert len(job.of("run_started")) == attempts
    pid = next(e["pid"] for e in job.of("rank_started") if e["rank"] == 1)
    host = job.of("run_failed")[0]["root"]["host"]
    kern = (logs / host / "kern.log").read_text().splitlines()
    line = next(line for line in kern if ": Xid (" in line and xid_line.split(",")[0] + "," in line)
    assert re.match(STAMP.format(host=host) + re.escape(f"NVRM: Xid (PCI:0000:{BUS}:00): "
                                                        f"{xid_line.format(pid=pid)}"), line), line
    assert [line.split("): ")[1].split(",")[0] for line in kern if ": Xid (" in line] == logged
    said = [text for e in job.of("rank_output", rank=1) for text in e["lines"]]
    assert said.count(f"[rank1]: RuntimeError: CUDA error: {error}") == attempts
    assert job.of("kernel_message", node_rank=0)[0]["text"] == kern[0].split("] ", 1)[1]
