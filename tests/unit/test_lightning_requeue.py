"""Lightning's SLURM auto-requeue on SIGUSR1 (Lightning-AI/pytorch-lightning
at 2.4.0 to 2.6.5: trainer/connectors/signal_connector.py,
checkpoint_connector.py hpc_save_path/_hpc_resume_path,
fabric/plugins/environments/slurm.py): when it is on, the hpc_ckpt_N.ckpt
its handler saves, the lines it logs, the `scontrol requeue` it runs, and
the resume from it."""

from __future__ import annotations

import os
import pickle
import stat
import zipfile
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.checkpoint import lightning as lightning_ckpt
from fakerun.checkpoint import lightning_hpc
from fakerun.cli.slurm import requeue_job
from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
from fakerun.rank.requeue import scontrol_requeue
from fakerun.render.lines import STDERR
from fakerun.world import styles
from fakerun.world.topology import Topology

from .test_style_lightning import _step, _writer, run_lines

SLURM = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train.sbatch"}


@pytest.mark.parametrize("environ,job", [
    (SLURM, "4242"),
    (SLURM | {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}, "77_3"),  # an array job's task
    (SLURM | {"SLURM_JOB_NAME": "interactive"}, None),  # _is_slurm_interactive_mode: not SLURM
    (SLURM | {"SLURM_JOB_NAME": "bash"}, None),
    ({"SLURM_JOB_ID": "4242"}, None),  # no SLURM_NTASKS: _is_srun_used is False
])
def test_when_slurm_environment_requeues_and_which_job(environ, job):
    assert requeue_job(environ) == job


def test_the_next_save_and_the_resume_are_numbered_as_lightning_numbers_them(tmp_path):
    assert lightning_hpc.save_path(tmp_path) == tmp_path / "hpc_ckpt_1.ckpt"
    assert lightning_hpc.resume_path(tmp_path) is None and lightning_hpc.find(tmp_path) is None
    for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt", "epoch=0-step=20.ckpt"):
        (tmp_path / name).touch()
    assert lightning_hpc.save_path(tmp_path) == tmp_path / "hpc_ckpt_11.ckpt"  # numbers, not names, compared
    assert lightning_hpc.resume_path(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
    (tmp_path / "last_ckpt_40.ckpt").touch()  # any `ckpt_` name counts for the save (name_key "ckpt_")
    assert lightning_hpc.save_path(tmp_path) == tmp_path / "hpc_ckpt_41.ckpt"
    assert lightning_hpc.resume_path(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"


def test_the_handler_saves_the_metrics_then_hpc_ckpt_beside_the_epoch_checkpoints(tmp_path):
    writer, _ = _writer(tmp_path, 40)
    writer.event(ev.Phase("train", "", 0, 100.0))
    for step in range(1, 26):
        writer.event(_step(step))
        if step == 20:
            writer.event(ev.Checkpoint(20, 1, "x/", 1, 1, 1, 1.0, 130.0))
    metrics = writer.dir / "metrics.csv"
    assert not metrics.exists()  # nothing flushed before step 100
    writer.event(ev.HpcCheckpoint(25, 1, 2.0, 140.0))
    assert metrics.read_text().splitlines()[-1].startswith("0,19,")  # logger.finalize: flushed
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    found = lightning_ckpt.find(hpc)
    assert (found.step, found.seed, found.model, found.time) == (25, 5, "Qwen2.5-1.5B", 140.0)
    epoch_ckpt = writer.dir / "checkpoints/epoch=0-step=20.ckpt"
    assert epoch_ckpt.exists()  # the ModelCheckpoint's top-1 is not the handler's to rotate
    with zipfile.ZipFile(hpc) as zf:
        body = pickle.loads(zf.read("archive/data.pkl"))
    assert body["callbacks"][lightning_ckpt.CHECKPOINT_KEY]["best_model_path"] == str(epoch_ckpt.absolute())
    progress = body["loops"]["fit_loop"]["epoch_progress"]["current"]
    assert (progress["started"], progress["processed"]) == (1, 0)  # saved inside epoch 0
    assert body["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] is False
    writer.event(ev.HpcCheckpoint(30, 1, 2.0, 150.0))
    assert lightning_ckpt.find(tmp_path / "hpc_ckpt_2.ckpt").step == 30
    assert lightning_hpc.find(tmp_path).step == 30


def _launched(ident: object, job: str) -> ev.RunStarted:
    return ev.RunStarted("r", 2, 1, 2, 0, 5, "train.py", [], 4, "h", 1, 1, 0, 0.0, requeue_job=job)


def test_the_lines_lightning_logs():
    r, plain = run_lines()
    assert not [line for line in plain if "SLURM" in line.text]
    r, _ = run_lines()
    r.launched(_launched(r.ident, "4242"))
    enabled = [line for line in r.banner(0.0) + r.lines(ev.Phase("train", "", 0, 10.0))
               if line.text == "SLURM auto-requeueing enabled. Setting signal handlers."]
    assert [(line.rank, line.stream) for line in enabled] == [(0, STDERR), (1, STDERR)]  # each rank's log.info
    said = r.lines(ev.HpcCheckpoint(3, 1, 1.0, 200.0)) + r.lines(ev.Requeued(3, 0, 201.0))
    assert [(line.text, line.stream, line.rank) for line in said] == [
        ("Handling auto-requeue signal: 10", STDERR, 0), ("requeing job 4242...", STDERR, 0),
        ("Requeued SLURM job: 4242", STDERR, 0)]
    failed = r.lines(ev.Requeued(3, 127, 201.0))
    assert failed[-1].text == "Requeuing SLURM job 4242 failed with error code 127"


def _fake_scontrol(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_scontrol_requeue_as_lightning_calls_it(tmp_path, monkeypatch):
    record = tmp_path / "argv"
    _fake_scontrol(tmp_path / "bin", f'echo "$0 $*" > {record}\nexit 0')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert scontrol_requeue("4242") == 0
    assert record.read_text().split()[1:] == ["requeue", "4242"]


def test_no_scontrol_then_the_shell_says_not_found(tmp_path, monkeypatch):
    """subprocess.call raises FileNotFoundError; Lightning retries through the shell: 127."""
    monkeypatch.setenv("PATH", str(tmp_path))  # /bin/sh is called by its path
    assert scontrol_requeue("4242") == 127


def test_a_hung_scontrol_is_a_failed_request(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path / "bin", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert scontrol_requeue("4242", timeout_s=0.2) == 1


def _config(root: Path, *args: str, job: str | None = "4242") -> RunConfig:
    return RunConfig(Topology(1, 2), seed=5, style=styles.parse("lightning"), output_dir=root,
                     task=0, requeue_job=job, script_args=args)


def test_a_requeued_job_resumes_from_its_latest_hpc_checkpoint(tmp_path):
    writer, _ = _writer(tmp_path, 40)
    for step in (12, 17):
        writer.event(ev.HpcCheckpoint(step, 1, 2.0, 140.0 + step))
    resumed = plan(_config(tmp_path)).resume_from
    assert (resumed.path, resumed.step) == (tmp_path / "hpc_ckpt_2.ckpt", 17)
    assert plan(_config(tmp_path, job=None)).resume_from is None  # not SLURMEnvironment: no hpc resume
    assert plan(_config(tmp_path, "fit", "--ckpt_path", "x.ckpt")).resume_from is None  # fit's ckpt_path wins
