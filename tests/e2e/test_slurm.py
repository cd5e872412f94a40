"""The sbatch examples (examples/slurm/) as contracts: each srun line is run
as srun would run it on 2 "nodes" of this machine, one process per task, with
the environment Slurm gives each task (tests/slurm_env.py), and the tasks
must join one job with the right ranks, leaving no process behind.

Hostnames: /etc/hosts is not ours to write, so the node list's first host
(gpu01, node 0) is mapped to loopback the way sbatch scripts usually set the
master themselves: MASTER_ADDR=127.0.0.1 in the task's environment. The port
is a free one (MASTER_PORT), never a fixed one. The examples ask for 8 GPUs
(or tasks) a node; the tests give each node 2 (SLURM_GPUS_ON_NODE, or srun's
--ntasks-per-node), as srun would with `--gpus-per-node=2`: the same lines,
a quarter of the processes."""

from __future__ import annotations

import os
import re
import shlex
import signal
from pathlib import Path

from fakerun.checkpoint import lightning as lightning_ckpt
from fakerun.checkpoint.lightning import float32
from fakerun.config.options import free_port

from ..conftest import SHORT_JOB, wait_until
from ..slurm_env import srun_task_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "slurm"
# Paced so that a signal finds the run training (a step is ~2 s of simulated time).
PACED = f"--speed 50 --max-steps 60 --seed 0 {shlex.join(SHORT_JOB)} --output jsonl"


def directives(sbatch: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", sbatch, re.MULTILINE))


def srun_line(sbatch: str, environ: dict[str, str]) -> list[str]:
    """fakerun's argv in the script's srun line, its variables expanded."""
    text = sbatch.replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("srun "))
    words = [re.sub(r"\$\{?(\w+)\}?", lambda m: environ[m.group(1)], word) for word in shlex.split(line)]
    assert words[:2] == ["srun", "fakerun"], words
    return words[2:]


def exports(sbatch: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", sbatch, re.MULTILINE))


def start_tasks(runner, tmp_path: Path, example: str, nnodes: int, per_node: int,
                opts: str, gpus: int = 2, extra: dict[str, str] | None = None) -> tuple[list, Path]:
    """Every task of the example's srun step, started as srun starts them,
    and the runtime directory their run directories are made in. `extra`:
    more of the job's environment (the batch script's PATH)."""
    sbatch = (EXAMPLES / example).read_text(encoding="utf-8")
    submit = tmp_path / "submit"
    submit.mkdir(exist_ok=True)
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    shared = runner.new_marker()  # the job's run id, which every task must agree on
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "FAKERUN_", "MASTER_"))}
    tasks = []
    for procid in range(nnodes * per_node):
        env = base | exports(sbatch) | srun_task_env("4242", nnodes, per_node, procid, gpus)
        env |= {"SLURM_SUBMIT_DIR": str(submit), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
                "XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(tmp_path),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "FAKERUN_OPTS": opts} | (extra or {})
        # After the runner's own --rdzv-id (each process's marker, which finds its processes): the job's.
        tasks.append(runner.start("--rdzv-id", shared, *srun_line(sbatch, env), env=env, cwd=submit))
    return tasks, runtime


def test_the_examples_ask_what_the_tests_scale_down():
    one = directives((EXAMPLES / "train.sbatch").read_text(encoding="utf-8"))
    per_task = directives((EXAMPLES / "train-per-task.sbatch").read_text(encoding="utf-8"))
    assert (one["nodes"], one["ntasks-per-node"], one["gpus-per-node"], one["signal"]) == ("2", "1", "8", "USR1@90")
    assert (per_task["nodes"], per_task["ntasks-per-node"], per_task["gpus-per-node"]) == ("2", "8", "8")


def test_one_task_a_node_is_torchrun_on_each_node_and_dies_of_slurm_s_warning(runner, tmp_path):
    """torchrun's agent takes no SIGUSR1 (torch 2.3 to 2.9): killed by it,
    it says nothing more, and its ranks and run directory go with it."""
    nodes, runtime = start_tasks(runner, tmp_path, "train.sbatch", 2, 1, PACED)
    nodes[0].wait_for_event("step", timeout=60)
    started = {e["rank"]: e for e in nodes[0].of("rank_started")}
    assert sorted(started) == [0, 1, 2, 3]
    for rank, e in started.items():
        env = e["env"]
        assert (e["node_rank"], e["local_rank"]) == (rank // 2, rank % 2)
        assert (env["RANK"], env["LOCAL_RANK"], env["GROUP_RANK"], env["WORLD_SIZE"]) == (
            str(rank), str(rank % 2), str(rank // 2), "4")
    for index, node in enumerate(nodes):
        run = node.of("run_started")[0]
        assert (run["node_rank"], run["nnodes"], run["nproc_per_node"]) == (index, 2, 2)
        assert node.of("run_identity")[0]["identity"]["hosts"] == ["gpu01", "gpu02"]  # Slurm's names
    for node in reversed(nodes):  # Slurm signals every task, in no set order
        node.kill(signal.SIGUSR1)
    for node in nodes:
        assert node.wait(30) == -signal.SIGUSR1
        assert not node.of("run_finished") and not node.of("node_lost")
        assert "Traceback" not in node.stderr and "closing signal" not in node.stderr
    assert not list(runtime.glob("*/job-*"))  # removed before it died


def test_one_task_a_rank_joins_one_job_and_saves_on_slurm_s_warning(runner, tmp_path):
    """srun's ranks, and SIGUSR1 to every task (--signal=USR1@90): fakerun's
    train.py saves at the next step, in its style's layout, and each task
    exits 0."""
    tasks, runtime = start_tasks(runner, tmp_path, "train-per-task.sbatch", 2, 2, PACED)
    tasks[0].wait_for_event("step", timeout=60)
    for task in reversed(tasks):
        task.kill(signal.SIGUSR1)
    for task in tasks:
        assert task.wait(60) == 0, task.stderr[-2000:]
    started = {e["rank"]: e for e in tasks[0].of("rank_started")}
    assert sorted(started) == [0, 1, 2, 3]
    assert all((e["node_rank"], e["local_rank"]) == (r // 2, r % 2) for r, e in started.items())
    assert all("RANK" not in e["env"] for e in started.values())  # srun sets no torchrun variables
    assert tasks[0].of("run_identity")[0]["identity"]["hosts"] == ["gpu01", "gpu02"]
    for procid, task in enumerate(tasks):
        exited = task.of("rank_exited")  # each task runs its own rank alone
        assert [(e["rank"], e["local_rank"], e["node_rank"]) for e in exited] == [(procid, procid % 2, procid // 2)]
        assert "torch/distributed" not in task.stderr and "[default" not in task.stderr  # no torchrun
        assert [e["exit_code"] for e in task.of("run_finished")] == [0]
    steps = [e["step"] for e in tasks[0].of("step")]
    assert steps[-1] < 60 and [e["step"] for e in tasks[0].of("checkpoint")] == [steps[-1]]  # saved, left
    assert not tasks[0].of("export")
    assert list((runtime.parent / "submit" / "checkpoints").iterdir())


def test_lightning_s_auto_requeue_saves_requeues_trains_on_and_the_rerun_resumes(runner, tmp_path):
    """SIGUSR1 to every task of a Lightning script under srun (SLURMEnvironment,
    auto_requeue=True): one hpc_ckpt_1.ckpt in the default root dir, global
    zero's `scontrol requeue 4242` (a stand-in on PATH records its argv) and
    Lightning's lines; training goes on to its end. The same command again,
    as Slurm reruns a requeued job, resumes from it and its loss carries on."""
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol-argv"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bin_dir / "scontrol").chmod(0o755)
    extra = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    job = f"--style lightning --max-steps 20 --seed 0 {shlex.join(SHORT_JOB)}"
    tasks, _ = start_tasks(runner, tmp_path, "train-per-task.sbatch", 1, 2, f"--speed 100 {job}", extra=extra)
    wait_until(lambda: "Epoch 0:" in tasks[0].stdout or tasks[0].proc.poll() is not None, 60)
    for task in reversed(tasks):
        task.kill(signal.SIGUSR1)
    for task in tasks:
        assert task.wait(60) == 0, task.stderr[-2000:]
    root = tmp_path / "submit" / "checkpoints"
    assert [p.name for p in root.glob("hpc_ckpt_*")] == ["hpc_ckpt_1.ckpt"]
    saved = lightning_ckpt.find(root / "hpc_ckpt_1.ckpt").step
    assert record.read_text() == "requeue 4242\n"  # global zero's alone
    said = tasks[0].stderr.splitlines()
    assert said[said.index("Handling auto-requeue signal: 10"):][:3] == [
        "Handling auto-requeue signal: 10", "requeing job 4242...", "Requeued SLURM job: 4242"]
    assert all("SLURM auto-requeueing enabled. Setting signal handlers." in t.stderr for t in tasks)
    assert "Handling auto-requeue" not in tasks[1].stderr  # rank_zero_info
    rows = (root / "lightning_logs/version_0/metrics.csv").read_text().splitlines()[1:]
    logged = {int(row.split(",")[1]) + 1: float(row.split(",")[2]) for row in rows if row.split(",")[2]}
    assert saved < 20 and max(logged) == 20  # saved, then trained on to the end
    again, _ = start_tasks(runner, tmp_path, "train-per-task.sbatch", 1, 2, f"--speed 0 {job} --output jsonl",
                           extra=extra)
    for task in again:
        assert task.wait(60) == 0, task.stderr[-2000:]
    assert again[0].of("run_started")[0]["resumed_from"] == str(root / "hpc_ckpt_1.ckpt")
    resumed = {e["step"]: float32(e["loss"]) for e in again[0].of("step")}
    assert min(resumed) == saved + 1 and resumed == {s: logged[s] for s in resumed}  # the same curve


def test_lightning_after_the_requeue_bypasses_slurm_s_sigterm_and_exits_0_at_the_next_batch(runner, tmp_path):
    """Slurm ends a requeued job at once with SIGTERM to every task: Lightning's
    auto-requeue SIGTERM handlers (signal_connector.py, 2.4.0 to 2.6.5) log on
    every rank, the training epoch loop raises SIGTERMException (a SystemExit
    with no code) at the end of the batch, and each task exits 0, no export,
    no process left."""
    job = f"--style lightning --max-steps 60 --seed 0 {shlex.join(SHORT_JOB)}"
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}  # no scontrol: the shell's 127 is said
    tasks, _ = start_tasks(runner, tmp_path, "train-per-task.sbatch", 1, 2, f"--speed 50 {job}", extra=env)
    wait_until(lambda: "Epoch 0:" in tasks[0].stdout or tasks[0].proc.poll() is not None, 60)
    for task in reversed(tasks):
        task.kill(signal.SIGUSR1)
    failed = "Requeuing SLURM job 4242 failed"
    wait_until(lambda: failed in tasks[0].stderr or tasks[0].proc.poll() is not None, 60)
    for task in reversed(tasks):
        task.kill(signal.SIGTERM)
    for task in tasks:
        assert task.wait(60) == 0, task.stderr[-2000:]
    for local, task in enumerate(tasks):
        said = task.stderr.splitlines()
        assert said[-2:] == [f"[rank: {local}] Received SIGTERM: 15", "Bypassing SIGTERM: 15"], said[-6:]
        assert "Received 15 death signal" not in task.stderr  # no torchrun
    root = tmp_path / "submit" / "checkpoints"
    rows = (root / "lightning_logs/version_0/metrics.csv").read_text().splitlines()[1:]
    assert max(int(row.split(",")[1]) + 1 for row in rows) < 60  # stopped: not trained to the end
    assert [p.name for p in root.glob("*.ckpt")] == ["hpc_ckpt_1.ckpt"]  # no save on the way out
