"""Values no one should pass, passed: each is one `fakerun: error:` line and
exit 2 before any process starts, never a traceback from deep inside the
launcher or a rank (issue 16, item 12)."""

from __future__ import annotations

import os

import pytest

FAST = ("--nproc", "2", "--max-steps", "2")


@pytest.mark.parametrize(("args", "env", "says"), [
    (("--start-time", "9999-12-31T23:59:59"), {}, "the year must be between"),  # ValueError after the fork
    (("--start-time", "1969-12-31T23:59:59"), {}, "the year must be between"),
    (("--speed", "1e-300"), {}, "--speed must be 0"),  # OverflowError in the ranks' sleeps
    (("--speed", "inf"), {}, "--speed must be 0"),
    ((), {"SLURM_NNODES": "²"}, "$SLURM_NNODES='²': expected a number"),  # a digit to isdigit, not to int
    ((), {"SLURM_NODEID": "١"}, "$SLURM_NODEID='١': expected a number"),
    (("--lifeline", "99999999999999999999"), {}, "--lifeline must be a process id"),  # OverflowError in psutil
])
def test_a_hostile_value_is_one_line_and_exit_2(runner, args, env, says):
    job = runner.start(*FAST, *args, env={**os.environ, "FAKERUN_OPTS": "", **env})
    assert job.wait(30) == 2, job.stderr[-2000:]
    assert job.stderr.count("\n") == 1 and says in job.stderr, job.stderr
    assert job.stdout == ""


def test_a_master_address_no_resolver_takes_does_not_break_one_node(runner):
    """One node binds no TCP: an address that fails IDNA encoding (a
    UnicodeError, not an OSError, out of gethostbyname) was a traceback."""
    job = runner.start(*FAST, "--rdzv-endpoint", "9" * 70, "--speed", "0",
                       env={**os.environ, "FAKERUN_OPTS": ""})
    assert job.wait(30) == 0, job.stderr[-2000:]
    assert "Traceback" not in job.stderr


def test_the_edges_of_the_accepted_range_run(runner):
    job = runner.start(*FAST, "--speed", "0", "--start-time", "8999-12-31T23:59:59", "--output", "jsonl",
                       env={**os.environ, "FAKERUN_OPTS": ""})
    assert job.wait(60) == 0, job.stderr[-2000:]


# The training script's own arguments shape the run (config/script_args.py): each
# value must give a run whose every contribution the coordinator accepts, or
# be refused before any process starts. `--per_device_train_batch_size
# 99999999999` made each rank's step a simulated century: the coordinator
# rejected it as out of range and the job waited for the 600 s watchdog.
@pytest.mark.parametrize(("script", "says"), [
    (("train.py", "--per_device_train_batch_size", "99999999999"), "memory at its first step"),  # CUDA or, on an AMD draw, HIP
    (("train.py", "--max_seq_length", "99999999999"), "memory at its first step"),  # CUDA or, on an AMD draw, HIP
    (("pretrain_gpt.py", "--micro-batch-size", "99999999999"), "memory at its first step"),  # CUDA or, on an AMD draw, HIP
    (("pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "64", "--seq-length", "99999999999"),
     "memory at its first step"),  # CUDA or, on an AMD draw, HIP
    (("train.py", "--gradient_accumulation_steps", "99999999999"), "tokens per optimizer step"),
    (("pretrain_gpt.py", "--global-batch-size", "99999999999"), "tokens per optimizer step"),
    (("train.py", "--num_train_epochs", "inf"), "--num_train_epochs 'inf': expected a finite number"),
    (("train.py", "--learning_rate", "nan"), "Invalid learning rate: nan"),
    (("pretrain_gpt.py", "--num-layers", "9" * 400, "--hidden-size", "64"), "--num-layers"),
])
def test_a_script_argument_no_job_could_run_is_one_line_and_exit_2(runner, tmp_path, script, says):
    job = runner.start(*FAST, "--speed", "0", *script, cwd=tmp_path, env={**os.environ, "FAKERUN_OPTS": ""})
    assert job.wait(30) == 2, job.stderr[-2000:]
    assert job.stderr.count("\n") == 1 and job.stderr.startswith("fakerun: error:"), job.stderr
    assert says in job.stderr, job.stderr
    assert job.stdout == ""


@pytest.mark.parametrize("script", [
    # Recomputing: without it no GPU holds 64 x 1024 tokens' activations under the Trainer's DDP.
    ("train.py", "--per_device_train_batch_size", "64", "--max_seq_length", "1024", "--gradient_checkpointing"),
    ("train.py", "--gradient_accumulation_steps", "10000"),
    ("train.py", "--model_name_or_path", "llama-0b"),  # ZeroDivisionError: the family's first, as unsized
    ("train.py", "--model_name_or_path", "llama-" + "9" * 400 + "b"),  # ValueError: math domain error
    ("pretrain_gpt.py", "--num-layers", "1", "--hidden-size", "1", "--seq-length", "1"),
])
def test_a_script_argument_a_job_could_have_runs_with_nothing_rejected(runner, script):
    job = runner.start("--nproc", "2", "--max-steps", "3", "--speed", "0", "--output", "jsonl", *script,
                       env={**os.environ, "FAKERUN_OPTS": ""})
    assert job.wait(30) == 0, job.stderr[-2000:]
    (finished,) = job.of("run_finished")
    assert finished["rejected"] == {}, finished
