"""What torchrun prints that depends on the run's torch (identity.versions.torch),
for end-to-end checks. tests/unit/test_torchrun_versions.py holds the same
figures against real logs of each version."""

from __future__ import annotations

import re
from typing import Any

# file:line of the launcher's logging calls, per torch of versions.txt.
WHERE = {
    "2.3.1": {"omp_banner": "torch/distributed/run.py:757",
              "failed": "torch/distributed/elastic/multiprocessing/api.py:826",
              "error_file": "torch/distributed/elastic/multiprocessing/errors/error_handler.py:136"},
    "2.4.1": {"omp_banner": "torch/distributed/run.py:779",
              "failed": "torch/distributed/elastic/multiprocessing/api.py:833",
              "error_file": "torch/distributed/elastic/multiprocessing/errors/error_handler.py:137"},
    "2.5.1": {"omp_banner": "torch/distributed/run.py:793",
              "failed": "torch/distributed/elastic/multiprocessing/api.py:869",
              "error_file": "torch/distributed/elastic/multiprocessing/errors/error_handler.py:141"},
    "2.9.1": {"omp_banner": "torch/distributed/run.py:803",
              "failed": "torch/distributed/elastic/multiprocessing/api.py:882",
              "error_file": "torch/distributed/elastic/multiprocessing/errors/error_handler.py:141"},
}
# torch._logging printed the thread's id (record.thread) after the time before
# 2.5, the process id since.
PRINTS_THREAD_ID = ("2.3.1", "2.4.1")


def torch_of(job: Any) -> str:
    """The torch the run claims: its run_identity event, or (plain output) the
    torchrun-style script's `Framework: PyTorch X` banner line."""
    identity = job.of("run_identity")
    torch = (identity[0]["identity"]["versions"]["torch"] if identity
             else re.search(r"Framework: PyTorch (\S+)", job.stdout).group(1))
    torch = torch.split("+")[0]  # a ROCm wheel (2.5.1+rocm6.2) ships the same torch/distributed sources
    assert torch in WHERE, f"no expectations for torch {torch}"
    return torch


def exitcode_line(exitcode: int, pid: int) -> str:
    """The ChildFailedError box's exitcode line (with its newline). Up to torch
    2.9 (every torch of versions.txt) it names no signal and has no trailing space."""
    return f"  exitcode  : {exitcode} (pid: {pid})\n"
