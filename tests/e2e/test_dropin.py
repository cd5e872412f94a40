"""fakerun as a drop-in for torchrun: the job's own launch line, unchanged,
runs a believable simulation of that job (README: "fakerun in CI")."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import DEFAULT_TIMEOUT, job_processes, wait_until
from tests.e2e.test_simulation import FIXED, clean_env
from tests.e2e.test_styles import rank_lines

# A job that runs on 2 GPUs under the Trainer's plain DDP (Llama-3.1-8B would need 160 GB a GPU).
LLAMA = ("--model_name_or_path", "meta-llama/Llama-3.2-1B", "--per_device_train_batch_size", "4")


def test_the_torchrun_drop_in_runs_the_job_its_launch_line_describes(runner, tmp_path):
    # The acceptance line of the drop-in: a transformers script's own arguments make the job.
    # Teed, so that each line says its rank (torchrun's default prints them bare), with
    # NCCL_DEBUG=INFO, so that rank 1 says something too (its NCCL set-up).
    job = runner.start(*FIXED, "--output", "plain", "--nproc-per-node", "2", "--tee", "3", "train.py",
                       *LLAMA, "--max_steps", "20", "--output_dir", "out", env=clean_env() | {"NCCL_DEBUG": "INFO"},
                       cwd=tmp_path)
    assert job.wait() == 0, job.stderr
    block = [line for rank, line in rank_lines(job.stderr) if rank == 0]  # the Trainer's, in hf style
    for line in ("***** Running training *****", "  Instantaneous batch size per device = 4",
                 "  Total optimization steps = 20", "  Gradient Accumulation steps = 1",
                 "  Number of trainable parameters = 1,235,814,400"):  # Llama-3.2-1B's
        assert line in block
    assert {rank for rank, _ in rank_lines(job.stdout + job.stderr)} == {0, 1}  # --nproc-per-node 2
    assert "Saving model checkpoint to out/checkpoint-20" in block
    assert (tmp_path / "out" / "checkpoint-20" / "trainer_state.json").is_file()


def torchrun_on_path(tmp_path: Path) -> dict[str, str]:
    """The README's recipe: a `torchrun` on PATH that is fakerun."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "torchrun").symlink_to(Path(sys.executable).parent / "fakerun")
    return clean_env() | {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}


def test_a_launch_line_runs_unchanged_with_fakerun_as_torchrun(tmp_path):
    marker = f"fakerun-test-{uuid.uuid4().hex[:12]}"  # --run_name: a Trainer flag, here to find the processes
    env = torchrun_on_path(tmp_path) | {"FAKERUN_OPTS": f"{' '.join(FIXED)} --scenario cuda-oom --fail-step 3"}
    line = ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--rdzv_backend=c10d", "--tee=3",
            "train.py",
            *LLAMA, "--max_steps", "6", "--logging_steps", "1", "--output_dir", "out", "--run_name", marker]
    try:
        proc = subprocess.run(line, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
        assert proc.returncode == 1, proc.stderr[-2000:]  # the scenario chosen through $FAKERUN_OPTS
        trainer = [line for rank, line in rank_lines(proc.stderr) if rank == 0]
        assert "  Instantaneous batch size per device = 4" in trainer and "  Total optimization steps = 6" in trainer
        assert "[rank1]: torch.OutOfMemoryError: CUDA out of memory." in proc.stderr.replace("[default1]:", "")
        assert "train.py FAILED" in proc.stderr
    finally:
        assert wait_until(lambda: not job_processes(marker), 10), "processes left behind"
