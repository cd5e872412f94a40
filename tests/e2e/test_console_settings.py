"""torchrun's console settings, end to end: --tee, --redirects, --role, the
prefix template and LOGLEVEL decide each rank line's route and prefix as the
real torchrun does (torch/distributed/elastic/multiprocessing/api.py
DefaultLogsSpecs.reify and tail_log.py TailLog; agent/server/
local_elastic_agent.py _start_workers for the template; checked with the
torch 2.3.1 to 2.13.0 wheels)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.test_simulation import FIXED, clean_env

SHORT = (*FIXED, "--nproc", "2", "--max-steps", "3", "--output", "plain")
TRAINING = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")  # the seeds' training script's lines
BRACKETED = re.compile(r"^\[[a-z]+\d+\]:")  # any tee prefix of the default form
OMP = "Setting OMP_NUM_THREADS environment variable"


def lines(job) -> list[str]:
    return job.stdout.splitlines() + job.stderr.splitlines()


def test_a_drop_in_launch_prints_bare_rank_lines_and_no_nccl_lines(runner):
    job = runner.run(*SHORT, "train.py")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert [line for line in job.stdout.splitlines() if TRAINING.match(line)], job.stdout[:2000]
    assert not [line for line in lines(job) if BRACKETED.match(line)]
    assert " NCCL INFO " not in job.stdout + job.stderr  # no NCCL_DEBUG: NCCL prints nothing


def test_tee_3_with_role_rank_prints_rank_n_as_torchtitan_launches(runner):
    job = runner.run(*SHORT, "--tee", "3", "--role", "rank", "--output", "jsonl", "train.py")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert {e["env"]["ROLE_NAME"] for e in job.of("rank_started")} == {"rank"}
    plain = runner.run(*SHORT, "--tee", "3", "--role", "rank", "train.py")
    assert plain.proc.returncode == 0, plain.stderr[-2000:]
    prefixes = {m.group(0) for m in map(BRACKETED.match, plain.stdout.splitlines()) if m}
    assert prefixes == {"[rank0]:"}  # the seeds' script logs on rank 0 only
    assert not [line for line in plain.stdout.splitlines() if TRAINING.match(line)]  # every one teed


def test_the_template_comes_from_the_environment_and_the_flag_wins(runner):
    env = clean_env() | {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "${role_name}/${rank}/${host}| "}
    job = runner.run(*SHORT, "--tee", "3", "train.py", env=env)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    out = job.stdout.splitlines()
    assert out and all(line.startswith("default/0/${host}| ") for line in out)  # safe_substitute keeps ${host}
    flag = runner.run(*SHORT, "--tee", "3", "--log-line-prefix-template", "r${local_rank}> ", "train.py", env=env)
    assert flag.proc.returncode == 0, flag.stderr[-2000:]
    assert flag.stdout and all(line.startswith("r0> ") for line in flag.stdout.splitlines())


def test_redirects_3_in_the_demo_keeps_rank_lines_off_the_console_and_in_the_files(runner, tmp_path: Path):
    logs = tmp_path / "logs"
    job = runner.run(*SHORT, "--redirects", "3", "--log-dir", str(logs))
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert job.stdout == ""  # every rank line redirected; the demo's --tee 3 does not take them back
    assert OMP in job.stderr  # torchrun's own lines stay
    [stdout_log] = logs.glob("*/attempt_0/0/stdout.log")
    written = stdout_log.read_text().splitlines()
    assert any(TRAINING.match(line) for line in written)
    assert not [line for line in written if BRACKETED.match(line)]  # the rank's own lines: no tee prefix


def test_loglevel_error_hides_torchruns_warnings_and_info_shows_the_agents_lines(runner):
    job = runner.run(*SHORT, "train.py", env=clean_env() | {"LOGLEVEL": "ERROR"})
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert OMP not in job.stderr
    loud = runner.run(*SHORT, "--role", "rank", "train.py", env=clean_env() | {"LOGLEVEL": "INFO"})
    assert loud.proc.returncode == 0, loud.stderr[-2000:]
    assert OMP in loud.stderr and "[rank] Rendezvous complete for workers. Result:" in loud.stderr
    assert loud.stderr.rstrip().endswith(" seconds")  # "Done waiting for other agents. Elapsed: ..."


def test_every_local_node_resolves_the_same_settings(runner):
    job = runner.run("--nodes", "2", "--no-theatre", *SHORT, "--tee", "3", "--role", "rank", "train.py",
                     timeout=90)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    ranked = [line.split(": ", 1)[1] for line in job.stdout.splitlines() if ": [rank" in line]
    assert ranked and not [line for line in lines(job) if "[default" in line]


def test_log_dir_dev_null_prints_every_rank_stream_bare(runner):
    # torch 2.13.0 wheel: `torchrun --tee 3 --redirects 3 --local-ranks-filter 0 --log-dir /dev/null` prints
    # every rank's stdout and stderr bare (DefaultLogsSpecs.reify tees into /dev/null, redirects nothing).
    job = runner.run(*SHORT, "--tee", "3", "--local-ranks-filter", "1", "--log-dir", "/dev/null")
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert [line for line in job.stdout.splitlines() if TRAINING.match(line)]  # rank 0's, though filtered out
    assert not [line for line in lines(job) if BRACKETED.match(line)]


def test_log_dir_dev_null_keeps_no_error_file(runner):
    # DefaultLogsSpecs.reify under /dev/null sets TORCHELASTIC_ERROR_FILE="" (v2.3.1 to v2.9.1
    # elastic/multiprocessing/api.py; 2.5.1: line 343): @record writes nothing, and the report says so.
    job = runner.run(*SHORT, "--scenario", "rank-crash", "--log-dir", "/dev/null", "--output", "jsonl")
    assert job.proc.returncode == 1, job.stderr[-2000:]
    assert {e["env"]["TORCHELASTIC_ERROR_FILE"] for e in job.of("rank_started")} == {""}
    assert "  error_file: <N/A>\n" in job.stderr
    assert "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html" in job.stderr
