"""A Lightning script's files on disk, as the pinned lightning release writes
them under its Trainer's default_root_dir (Lightning-AI/pytorch-lightning at
2.5.0: trainer/connectors/logger_connector/logger_connector.py picks a
CSVLogger when tensorboard is absent, fabric/loggers/csv_logs.py names
lightning_logs/version_N and writes metrics.csv, loggers/csv_logs.py
hparams.yaml, cli.py's SaveConfigCallback config.yaml, callbacks/model_checkpoint.py `checkpoints/epoch=E-step=S.ckpt`
keeping the top 1, trainer/connectors/checkpoint_connector.py dump_checkpoint
the .ckpt's keys), and LightningCLI's `fit --ckpt_path` resuming from one."""

from __future__ import annotations

import csv
import io
import pickle
import re
import struct
import zipfile
from pathlib import Path

from fakerun.world.styles import TRAINER
from tests.e2e.test_styles import clean_env

FIXED = ("--nproc", "2", "--speed", "0", "--seed", "5", "--start-time", "2026-01-30T14:23:15")
DUMP_KEYS = ["epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
             "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"]


def fit(runner, cwd: Path, *trainer: str, output: str = "jsonl"):
    job = runner.run(*FIXED, "--output", output, "train.py", "fit", "--trainer.default_root_dir", "out",
                     *trainer, cwd=cwd, env=clean_env())
    assert job.proc.returncode == 0, job.stderr
    return job


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def load(ckpt: Path) -> dict:
    """The .ckpt's dict, read as plain data: no class is named in it."""
    with zipfile.ZipFile(ckpt) as zf:
        names = zf.namelist()
        # torch.save into a BytesIO (Lightning's _atomic_save): the folder is "archive".
        assert names == ["archive/data.pkl", "archive/byteorder", "archive/version", "archive/.data/serialization_id"]
        return pickle.loads(zf.read(names[0]))


def float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def test_the_files_and_what_they_hold(runner, tmp_path):
    job = fit(runner, tmp_path, "--trainer.max_steps", "12")
    out = tmp_path / "out"
    # Nothing else: no hidden file, no temporary left (rglob lists dot files too).
    assert files(out) == ["lightning_logs/version_0/checkpoints/epoch=0-step=12.ckpt",
                          "lightning_logs/version_0/config.yaml", "lightning_logs/version_0/hparams.yaml",
                          "lightning_logs/version_0/metrics.csv"]
    assert not any(b"fakerun" in p.read_bytes().lower() for p in out.rglob("*") if p.is_file())  # no trace of us
    logs = out / "lightning_logs/version_0"
    # LightningCLI's SaveConfigCallback: the fit config, every Trainer parameter in __init__'s order.
    config = (logs / "config.yaml").read_text().splitlines()
    assert config[:4] == ["# lightning.pytorch==2.5.0", "seed_everything: 0", "trainer:", "  accelerator: auto"]
    trainer = [line.split(":")[0].strip() for line in config[config.index("trainer:") + 1:config.index("model:")]
               if line.startswith("  ") and not line.startswith("  -")]
    assert trainer == [name for name, _ in TRAINER]
    assert {"  max_steps: 12", "  default_root_dir: out", "  devices: 2", "  precision: bf16-mixed",
            "optimizer: null", "lr_scheduler: null", "ckpt_path: null"} <= set(config)
    assert config[-1] == "ckpt_path: null" and config[config.index("model:") + 1] == "  model_name_or_path: " + \
        job.of("run_identity")[0]["identity"]["model"]["name"]
    hyper = job.of("run_identity")[0]["identity"]["hyper"]
    # A LightningCLI-made module's hparams say how it was made (cli.py _InstantiatorFn).
    params = {"_instantiator": "lightning.pytorch.cli.instantiate_module", "learning_rate": hyper["max_lr"], "model_name_or_path": job.of("run_identity")[0]["identity"][
        "model"]["name"], "seed": 5, "warmup_steps": hyper["warmup_steps"]}
    assert (logs / "hparams.yaml").read_text() == "".join(f"{k}: {v}\n" for k, v in sorted(params.items()))
    # One row per log_every_n_steps optimizer steps, at the steps done before it, float32 values.
    losses = {s["step"]: s["loss"] for s in job.of("step")}
    rows = list(csv.DictReader(io.StringIO((logs / "metrics.csv").read_text())))
    every = hyper["log_every"]
    assert [int(r["step"]) for r in rows] == [s - 1 for s in range(every, 13, every)]
    assert all(float(r["train_loss"]) == float32(losses[int(r["step"]) + 1]) and r["epoch"] == "0"
               for r in rows)
    ckpt = load(logs / "checkpoints/epoch=0-step=12.ckpt")
    assert list(ckpt) == DUMP_KEYS  # bf16-mixed: no MixedPrecision state
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["pytorch-lightning_version"]) == (0, 12, "2.5.0")
    assert ckpt["hyper_parameters"] == params and ckpt["hparams_name"] == "kwargs"
    (state,) = ckpt["callbacks"].values()
    assert state["best_model_path"] == str(logs.absolute() / "checkpoints/epoch=0-step=12.ckpt")
    fit_loop = ckpt["loops"]["fit_loop"]
    assert fit_loop["epoch_loop.state_dict"] == {"_batches_that_stepped": 12}
    assert fit_loop["epoch_loop.batch_progress"]["total"]["completed"] == 12 * hyper["grad_accum"]
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 12
    assert ckpt["lr_schedulers"][0]["_last_lr"] == [job.of("step")[-1]["lr"]]


def test_the_log_names_the_logger_it_writes_with(runner, tmp_path):
    job = fit(runner, tmp_path, "--trainer.max_steps", "12", output="plain")
    assert job.stderr.count("logger_connector.py:76: Starting from v1.9.0") == 1  # CSVLogger: metrics.csv
    assert "v_num=0," in job.stdout
    # LightningCLI seeds first: no --seed_everything, so 0 and a warning (fabric/utilities/seed.py:42 at 2.5.0).
    lines = job.stderr.splitlines()
    seeded = [lines.index(f"[rank: {r}] Seed set to 0") for r in (0, 1)]
    warned = lines.index("/opt/conda/lib/python3.11/site-packages/lightning/fabric/utilities/seed.py:42: "
                         "No seed found, seed set to 0")
    assert warned < min(seeded) and max(seeded) < lines.index("Using bfloat16 Automatic Mixed Precision (AMP)")
    given = fit(runner, tmp_path, "--trainer.max_steps", "12", "--seed_everything", "42", output="plain")
    assert "[rank: 1] Seed set to 42" in given.stderr.splitlines() and "No seed found" not in given.stderr


def test_top_1_and_validation_mid_epoch(runner, tmp_path):
    """val_check_interval=4 batches (no accumulation): a validation at steps
    4, 8 and 12, the checkpoint saved after each (model_checkpoint.py
    _should_save_on_train_epoch_end is False) and the one before removed."""
    job = fit(runner, tmp_path, "--trainer.max_steps", "12", "--trainer.accumulate_grad_batches", "1",
              "--trainer.val_check_interval", "4")
    assert [v["step"] for v in job.of("validation")] == [4, 8, 12]
    assert [c["step"] for c in job.of("checkpoint")] == [4, 8, 12]
    logs = tmp_path / "out/lightning_logs/version_0"
    assert files(logs) == ["checkpoints/epoch=0-step=12.ckpt", "config.yaml", "hparams.yaml", "metrics.csv"]
    rows = list(csv.DictReader(io.StringIO((logs / "metrics.csv").read_text())))
    val = {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    assert val == {v["step"] - 1: float32(v["val_loss"]) for v in job.of("validation")}
    assert all(r["train_loss"] == "" for r in rows if r["val_loss"])  # rows of their own


def test_resume_from_ckpt_path_continues_the_curve(runner, tmp_path):
    for name in ("whole", "part"):
        (tmp_path / name).mkdir()
    whole = fit(runner, tmp_path / "whole", "--trainer.max_steps", "24")
    fit(runner, tmp_path / "part", "--trainer.max_steps", "12")
    ckpt = "out/lightning_logs/version_0/checkpoints/epoch=0-step=12.ckpt"
    # Another --seed: the checkpoint's run wins (its seed is in the module's hparams).
    resumed = runner.run("--nproc", "2", "--speed", "0", "--seed", "77", "--output", "plain", "train.py", "fit",
                         "--trainer.default_root_dir", "out", "--trainer.max_steps", "24", "--ckpt_path", ckpt,
                         cwd=tmp_path / "part", env=clean_env())
    assert resumed.proc.returncode == 0, resumed.stderr
    assert f"Restoring states from the checkpoint path at {ckpt}" in resumed.stderr
    lines = resumed.stderr.splitlines()
    restored = lines.index(f"Restored all states from the checkpoint at {ckpt}")
    # Step 12 is inside the (pre-training) epoch: training_epoch_loop.py:221 (2.5.0) warns as the fit loop starts.
    assert lines[restored + 1].endswith("/lightning/pytorch/loops/training_epoch_loop.py:221: You're resuming from a "
                                        "checkpoint that ended before the epoch ended and your dataloader is not "
                                        "resumable. This can cause unreliable results if further training is done. "
                                        "Consider using an end-of-epoch checkpoint or make your dataloader resumable "
                                        "by implementing the `state_dict` / `load_state_dict` interface.")
    assert "v_num=1," in resumed.stdout and "v_num=0," not in resumed.stdout
    out = tmp_path / "part/out"
    # The new fit logs to the next version; the checkpoint it resumed is kept.
    assert files(out) == [ckpt.removeprefix("out/"), *(f"lightning_logs/version_0/{name}" for name in (
        "config.yaml", "hparams.yaml", "metrics.csv")), "lightning_logs/version_1/checkpoints/epoch=0-step=24.ckpt",
        *(f"lightning_logs/version_1/{name}" for name in ("config.yaml", "hparams.yaml", "metrics.csv"))]
    assert f"ckpt_path: {ckpt}" in (out / "lightning_logs/version_1/config.yaml").read_text().splitlines()
    expected = {s["step"]: float32(s["loss"]) for s in whole.of("step") if s["step"] > 12}
    rows = list(csv.DictReader(io.StringIO((out / "lightning_logs/version_1/metrics.csv").read_text())))
    shown = {int(r["step"]) + 1: float(r["train_loss"]) for r in rows}
    assert shown and all(step > 12 and expected[step] == loss for step, loss in shown.items())
    assert load(out / "lightning_logs/version_1/checkpoints/epoch=0-step=24.ckpt")["hyper_parameters"]["seed"] == 5


def test_what_lightningcli_refuses(runner, tmp_path):
    bad = runner.run(*FIXED, "train.py", "fit", "--trainer.max_step", "12", cwd=tmp_path, env=clean_env())
    assert bad.proc.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("fakerun: error: training script argument --trainer.max_step: Unrecognized arguments: "
                          "--trainer.max_step 12 (LightningCLI's parser refuses it)\n")
    world = runner.run(*FIXED, "train.py", "fit", "--trainer.devices", "4", cwd=tmp_path, env=clean_env())
    assert world.proc.returncode == 2 and len(world.stderr.splitlines()) == 1
    assert "You set `devices=4` and `num_nodes=1` in Lightning, but the product (4 * 1) does not match the world " \
           "size (2)." in world.stderr
    assert not (tmp_path / "out").exists()


def test_epochs_validate_and_save_at_each_end(runner, tmp_path):
    """Seed 1 draws a fine-tune of 13 steps an epoch: the defaults
    (val_check_interval=1.0, every_n_epochs=1, save_top_k=1) validate and
    save at each epoch's end, and only the last epoch's file is left;
    fit_loop.py says which limit stopped it."""
    job = runner.run("--nproc", "2", "--speed", "0", "--seed", "1", "--output", "plain", "train.py", "fit",
                     "--trainer.max_epochs", "2", "--trainer.default_root_dir", "out", cwd=tmp_path, env=clean_env())
    assert job.proc.returncode == 0, job.stderr
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in job.stderr.splitlines()
    logs = tmp_path / "out/lightning_logs/version_0"
    assert files(logs) == ["checkpoints/epoch=1-step=26.ckpt", "config.yaml", "hparams.yaml", "metrics.csv"]
    rows = list(csv.DictReader(io.StringIO((logs / "metrics.csv").read_text())))
    assert [(r["epoch"], r["step"]) for r in rows if r["val_loss"]] == [("0", "12"), ("1", "25")]
    config = (logs / "config.yaml").read_text().splitlines()
    assert "  max_epochs: 2" in config and "  max_steps: -1" in config
    assert load(logs / "checkpoints/epoch=1-step=26.ckpt")["loops"]["fit_loop"]["epoch_progress"]["total"] == {
        "ready": 2, "started": 2, "processed": 2, "completed": 1}  # saved in on_train_epoch_end


def shown_versions(stdout: str) -> set[str]:
    """The logger versions the train bar's postfix shows."""
    return set(re.findall(r"v_num=(\d+)", stdout))


def test_a_second_fit_into_the_same_root_shows_the_version_it_writes(runner, tmp_path):
    """The CSVLogger's version is the next free one under lightning_logs at
    launch (fabric/loggers/csv_logs.py _get_next_version at 2.5.0): the
    second fit writes version_1/, and its bar says v_num=1."""
    first = fit(runner, tmp_path, "--trainer.max_steps", "12", output="plain")
    second = fit(runner, tmp_path, "--trainer.max_steps", "12", output="plain")
    assert shown_versions(first.stdout) == {"0"} and shown_versions(second.stdout) == {"1"}
    logs = tmp_path / "out/lightning_logs"
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]
    assert files(logs / "version_1") == ["checkpoints/epoch=0-step=12.ckpt", "config.yaml", "hparams.yaml",
                                         "metrics.csv"]


def test_fakeruns_resume_restores_as_ckpt_path_does(runner, tmp_path):
    """fakerun's --resume hands the script the .ckpt it found: the same
    'Restoring states' / 'Restored all states' lines as --ckpt_path, the
    mid-epoch warning of a step-12 checkpoint, and the next version."""
    fit(runner, tmp_path, "--trainer.max_steps", "12")
    resumed = runner.run(*FIXED, "--resume", "--output", "plain", "train.py", "fit", "--trainer.default_root_dir",
                         "out", "--trainer.max_steps", "24", cwd=tmp_path, env=clean_env())
    assert resumed.proc.returncode == 0, resumed.stderr
    ckpt = "out/lightning_logs/version_0/checkpoints/epoch=0-step=12.ckpt"
    assert (tmp_path / ckpt).is_file()  # the file the lines name: the one resumed, kept
    lines = resumed.stderr.splitlines()
    assert f"Restoring states from the checkpoint path at {ckpt}" in lines
    restored = lines.index(f"Restored all states from the checkpoint at {ckpt}")
    assert "training_epoch_loop.py:221: You're resuming from a checkpoint that ended before the epoch ended" in \
        lines[restored + 1]
    assert "Sanity Checking" not in resumed.stdout  # a restored fit skips the sanity check
    assert shown_versions(resumed.stdout) == {"1"}
    assert files(tmp_path / "out/lightning_logs/version_1") == [
        "checkpoints/epoch=0-step=24.ckpt", "config.yaml", "hparams.yaml", "metrics.csv"]


def test_a_restarted_script_logs_to_the_next_version_and_restores_the_last_save(runner, tmp_path):
    """A crash at step 10 with --max-restarts 1: the new script restores
    the checkpoint saved at 8 (val_check_interval=4), from the version the
    first one wrote, and logs to the next; screen and disk agree."""
    job = runner.run(*FIXED, "--output", "plain", "--scenario", "rank-crash", "--fail-rank", "1", "--fail-step", "10",
                     "--max-restarts", "1", "train.py", "fit", "--trainer.default_root_dir", "out",
                     "--trainer.max_steps", "12", "--trainer.accumulate_grad_batches", "1",
                     "--trainer.val_check_interval", "4", cwd=tmp_path, env=clean_env())
    assert job.proc.returncode == 0, job.stderr[-2000:]
    ckpt = "out/lightning_logs/version_0/checkpoints/epoch=0-step=8.ckpt"
    assert f"Restored all states from the checkpoint at {ckpt}" in job.stderr.splitlines()
    assert (tmp_path / ckpt).is_file()
    assert re.findall(r"v_num=(\d+)", job.stdout)[-1] == "1" and shown_versions(job.stdout) == {"0", "1"}
    assert (tmp_path / "out/lightning_logs/version_1/checkpoints/epoch=0-step=12.ckpt").is_file()
