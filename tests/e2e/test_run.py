"""A whole job as a user runs it: processes, environment, collectives, steps."""

from __future__ import annotations

import os
import re

import psutil

from fakerun.coordinator.collective import reduce_values
from fakerun.world import identity
from fakerun.world import physics as sim
from tests.e2e.torchrun_versions import PRINTS_THREAD_ID, WHERE, torch_of


def test_healthy_run_jsonl(runner):
    # Qwen2.5-14B's 13.2 s steps (seed 7): ~850 s of simulated work, ~2 s of wall.
    job = runner.start("--nproc", "8", "--max-steps", "50", "--speed", "400", "--seed", "7",
                       "--output", "jsonl")
    started = job.wait_for_event("rank_started", 8)
    pids = [e["pid"] for e in started]
    assert len(set(pids)) == 8
    for pid in pids:  # live, and children of the launcher, while the job runs
        assert psutil.Process(pid).ppid() == job.proc.pid
        # batch-scheduled, so that a release waking every rank does not preempt the coordinator
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    assert os.sched_getscheduler(job.proc.pid) == os.SCHED_OTHER
    assert job.wait() == 0

    events = job.events()
    ranks = sorted(e["rank"] for e in job.of("rank_started"))
    assert ranks == list(range(8))
    steps = job.of("step")
    assert [s["step"] for s in steps] == list(range(1, 51))
    ident = identity.build(7, 1, 8, 50)  # the same pure model the ranks ran
    for s in steps:
        losses = [sim.local_loss(ident, r, s["step"]) for r in range(8)]
        assert s["loss"] == reduce_values([[x] for x in losses], "avg")[0]
        assert abs(s["loss"] - sum(losses) / 8) < 1e-12
        assert (s["loss_min"], s["loss_max"]) == (min(losses), max(losses))
    finished = events[-1]
    assert finished["event"] == "run_finished"
    assert finished == {"v": 1, "event": "run_finished", "exit_code": 0, "steps": 50,
                        "rejected": {}}
    exited = job.of("rank_exited")
    assert sorted((e["pid"], e["exitcode"]) for e in exited) == sorted((p, 0) for p in pids)


def test_every_event_has_version_and_name(runner):
    job = runner.run("--nproc", "2", "--max-steps", "3", "--speed", "0", "--output", "jsonl")
    assert job.proc.returncode == 0
    events = job.events()
    assert events and all(e["v"] == 1 and isinstance(e["event"], str) for e in events)
    first = events[0]
    assert first["event"] == "run_started"
    assert (first["world_size"], first["nnodes"], first["nproc_per_node"]) == (2, 1, 2)
    assert first["run_id"] == job.marker


def test_collectives_are_sequenced_and_recorded(runner):
    job = runner.run("--nproc", "4", "--max-steps", "5", "--speed", "0", "--output", "jsonl")
    colls = job.of("collective")
    assert [c["seq"] for c in colls] == list(range(1, len(colls) + 1))
    ops = [c["op"] for c in colls]
    assert ops[:2] == ["barrier", "broadcast"] and ops[-1] == "barrier"
    train = [c for c in colls if c["tag"] == "train_step"]
    assert len(train) == 5 and all(c["op"] == "all_reduce" and c["count"] == 2 for c in train)
    assert len({c["numel"] for c in train}) == 1 and train[0]["numel"] > 1e8  # a gradient, simulated
    for c in colls:
        assert c["ranks"] == [0, 1, 2, 3] and c["duration_us"] >= 0 and c["dtype"] == "float32"
        assert c["wall_us"] >= 0


def test_worker_environment_is_torchrun_s(runner):
    job = runner.run("--nproc", "3", "--max-steps", "1", "--speed", "0", "--output", "jsonl",
                     "--master-port", "29555")
    envs = {e["rank"]: e["env"] for e in job.of("rank_started")}
    for rank, env in envs.items():
        assert env["RANK"] == env["ROLE_RANK"] == str(rank)
        assert env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["ROLE_WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "3"
        assert (env["GROUP_RANK"], env["GROUP_WORLD_SIZE"], env["ROLE_NAME"]) == ("0", "1", "default")
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", "29555")
        assert env["TORCHELASTIC_RUN_ID"] == job.marker
        assert env["TORCHELASTIC_RESTART_COUNT"] == env["TORCHELASTIC_MAX_RESTARTS"] == "0"
        assert env["OMP_NUM_THREADS"] == "1"
        assert env["FAKERUN_COORDINATOR"].startswith(("ipc://", "tcp://"))


def test_plain_output_is_torchrun_like(runner):
    job = runner.run("--nproc", "2", "--max-steps", "3", "--speed", "0", "--output", "plain")
    assert job.proc.returncode == 0
    err = job.stderr.splitlines()
    # The OMP banner: glog prefix, empty first message (trailing space), the
    # line of run.py that logs it in the run's torch.
    torch = torch_of(job)
    assert len(err) == 4
    assert err[0].endswith(f" {WHERE[torch]['omp_banner']}] ")
    assert err[1].endswith("] *****************************************")
    assert err[2].endswith("as needed. ")
    # After the time: the launcher's pid (torch 2.5+) or its main thread's id (2.3, 2.4).
    ids = {line.split(" ")[2] for line in err}
    if torch in PRINTS_THREAD_ID:
        (thread,) = ids
        assert thread != str(job.proc.pid) and int(thread) & 0xFFF == 0x740 and len(thread) == 15
    else:
        assert ids == {str(job.proc.pid)}
    out = job.stdout.splitlines()
    assert re.fullmatch(r"\[default0\]:\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] =+", out[0])
    assert any(re.fullmatch(r"\[default1\]:[\w-]+:\d+:\d+ \[1\] NCCL INFO .*Init COMPLETE", x) for x in out)
    steps = [x for x in out if re.search(r"\] Epoch \d+/\d+ .* \| Step \d+/3$", x)]
    assert [x.rsplit(" ", 1)[1] for x in steps] == ["1/3", "2/3", "3/3"]
    assert all(x.startswith("[default") for x in out)
    assert "\x1b[" not in job.stdout + job.stderr


def test_single_process_prints_no_omp_banner(runner):
    job = runner.run("--nproc", "1", "--max-steps", "2", "--speed", "0")
    assert job.proc.returncode == 0 and job.stderr == ""


def test_log_dir_layout(runner, tmp_path):
    logs = tmp_path / "logs"
    job = runner.run("--nproc", "2", "--max-steps", "3", "--speed", "0", "--log-dir", str(logs))
    assert job.proc.returncode == 0
    (run_dir,) = logs.iterdir()
    assert run_dir.name.startswith(job.marker + "_") and len(run_dir.name) == len(job.marker) + 9
    for local in ("0", "1"):
        folder = run_dir / "attempt_0" / local
        assert sorted(p.name for p in folder.iterdir()) == ["stderr.log", "stdout.log"]
    # Each rank's own lines, without the console's [defaultN]: prefix.
    console = job.stdout.splitlines()
    for local in (0, 1):
        own = (run_dir / "attempt_0" / str(local) / "stdout.log").read_text().splitlines()
        prefix = f"[default{local}]:"
        assert own == [x[len(prefix):] for x in console if x.startswith(prefix)]
        assert own and not own[0].startswith("[default")


def test_no_omp_banner_when_the_user_set_omp_num_threads(runner):
    import os

    job = runner.start("--nproc", "2", "--max-steps", "2", "--speed", "0",
                       env={**os.environ, "OMP_NUM_THREADS": "4"})
    assert job.wait() == 0
    assert "OMP_NUM_THREADS" not in job.stderr and job.stderr == ""
