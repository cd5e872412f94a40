"""--style lightning's exact strings: bar lines made by tqdm's format_meter
with Lightning 2.5.0's TQDMProgressBar.BAR_FORMAT and Tqdm.format_num
(Lightning-AI/pytorch-lightning src/lightning/pytorch/callbacks/progress/
tqdm_progress.py), Lightning's own docstring examples, and the renderer's
streams and ranks on a hand-made event sequence."""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.checkpoint import layouts
from fakerun.checkpoint import lightning as lightning_ckpt
from fakerun.checkpoint.lightning import LightningWriter
from fakerun.checkpoint.reader import CheckpointError
from fakerun.config import lightning_args, script_args
from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
from fakerun.errors import UsageError
from fakerun.launcher import build
from fakerun.rank.faults import script_text
from fakerun.render.lines import STDERR, STDOUT
from fakerun.render.styles.lightning import (
    LightningLines,
    human_count,
    module_count,
    postfix_num,
    summary_table,
)
from fakerun.render.styles.tqdm import format_meter
from fakerun.world import catalog, identity, jobs, styles
from fakerun.world.topology import Topology

BAR_DICT = {"noinv": True}  # Lightning's BAR_FORMAT shows {rate_noinv_fmt}


def test_the_reference_bar_lines():
    # What tqdm 4.70.1's format_meter makes of these with Lightning's BAR_FORMAT and Tqdm.format_num.
    assert format_meter(2, 2, 1.234, 2 / 1.234, prefix="Sanity Checking DataLoader 0", **BAR_DICT) == \
        "Sanity Checking DataLoader 0: 100%|██████████| 2/2 [00:01<00:00,  1.62it/s]"
    assert format_meter(450, 1000, 30.61, 450 / 30.61, prefix="Epoch 0",
                        postfix=f"v_num=0, train_loss={postfix_num(2.31)}, lr={postfix_num(0.0003)}", **BAR_DICT) == \
        "Epoch 0:  45%|████▌     | 450/1000 [00:30<00:37, 14.70it/s, v_num=0, train_loss=2.310, lr=0.0003]"
    assert format_meter(12, 5000, 28, 0.43, prefix="Epoch 0", postfix=f"v_num=3, train_loss={postfix_num(10.4)}",
                        **BAR_DICT) == \
        "Epoch 0:   0%|          | 12/5000 [00:28<3:13:20,  0.43it/s, v_num=3, train_loss=10.40]"
    assert format_meter(20, 50, 3.43, 20 / 3.43, prefix="Validation DataLoader 0", **BAR_DICT) == \
        "Validation DataLoader 0:  40%|████      | 20/50 [00:03<00:05,  5.83it/s]"


def test_the_rate_is_never_inverted():
    # 2 s a batch: tqdm's default would say 2.00s/it; rate_noinv_fmt keeps it/s.
    assert format_meter(3, 10, 6, 0.5, prefix="Epoch 1", **BAR_DICT).endswith("[00:06<00:14,  0.50it/s]")
    assert format_meter(3, 10, 6, 0.5).endswith("[00:06<00:14,  2.00s/it]")


@pytest.mark.parametrize("value,shown", [
    (2.31, "2.310"), (10.4, "10.40"), (10.065019445158729, "10.10"), (5.8775, "5.880"), (0.0003, "0.0003"),
    (123.4, "123.0"), (1e-5, "1e-5"), (1234567.0, "1.23e+6"), (float("nan"), "nan.0"), (0, "0"), (3, "3")])
def test_postfix_numbers_are_tqdm_3g_then_padded(value, shown):
    """lightning's Tqdm.format_num: floats padded with 0 to 5 characters unless in
    e-notation (a NaN loss really shows as `nan.0`); ints (v_num) as they are."""
    assert postfix_num(value) == shown


@pytest.mark.parametrize("number,shown", [(123, "123  "), (1234, "1.2 K"), (2_000_000, "2.0 M"),
                                          (3_000_000_000, "3.0 B"), (4 * 10**14, "400 T"), (5 * 10**15, "5,000 T"),
                                          (117_000_000, "117 M"), (0, "0  ")])
def test_human_readable_counts(number, shown):
    assert human_count(number) == shown  # get_human_readable_count's docstring examples


def test_the_reference_summary_table():
    columns = [(" ", ["0"]), ("Name", ["model"]), ("Type", ["LlamaForCausalLM"]), ("Params", [human_count(1235814400)]),
               ("Mode", ["train"])]
    assert summary_table(1235814400, 295, columns, flops=False) == [
        "  | Name  | Type             | Params | Mode ",
        "---------------------------------------------------",
        "0 | model | LlamaForCausalLM | 1.2 B  | train",
        "---------------------------------------------------",
        "1.2 B     Trainable params",
        "0         Non-trainable params",
        "1.2 B     Total params",
        "4,943.258 Total estimated model params size (MB)",
        "295       Modules in train mode",
        "0         Modules in eval mode"]


def test_a_size_of_ten_characters_runs_into_its_label():
    # "{:<10}" pads nothing once the size fills the field (Lightning PR #20163 shows the same).
    table = summary_table(8030261248, 455, [(" ", ["0"])], flops=True)
    assert "32,121.045Total estimated model params size (MB)" in table
    assert table[-1] == "0         Total Flops"


@pytest.mark.parametrize("arch,layers,transformers,modules", [
    ("Qwen2ForCausalLM", 28, "4.46.3", 399), ("LlamaForCausalLM", 16, "4.46.3", 231),
    ("LlamaForCausalLM", 16, "5.0.0", 215), ("MixtralForCausalLM", 32, "4.44.2", 1670),
    ("Qwen2ForCausalLM", 28, "4.42.4", 398), ("LlamaForCausalLM", 32, "4.47.0", 455)])
def test_module_counts_follow_the_architecture_and_depth(arch, layers, transformers, modules):
    """Counted on the meta device for 4.44.2/4.46.3/5.0.0; other releases use the
    nearest earlier table (the earliest for older ones)."""
    assert module_count(arch, layers, transformers) == modules


def run_lines(version: str = "lightning", steps: int = 4,
              gpu: str = "NVIDIA H100 80GB HBM3") -> tuple[LightningLines, list]:
    (pinned,) = styles.parse(version).versions()
    ident = identity.build(5, 1, 2, total_steps=steps, model="Qwen2.5-1.5B", gpu=gpu, versions=pinned)
    r = LightningLines(100, None)
    r.lines(ev.RunIdentity(ident))
    out = r.banner(0.0) + r.lines(ev.Phase("init", "dataset", 0, 1.0)) + r.lines(ev.Phase("train", "", 0, 10.0))
    h = ident.hyper
    for step in range(1, steps + 1):
        out += r.lines(ev.Step(step, steps, 10.0 - step, 9.0, 11.0, 1.0, epoch=(step - 1) // h.steps_per_epoch + 1,
                               time=10.0 + 60 * step, step_time_s=60.0))
    out += r.lines(ev.Validation(steps, h.epochs, 6.5, 665.1, 30.0, 800, 40.0 + 60 * steps))
    out += r.lines(ev.Checkpoint(steps, h.epochs, "x/", 2, 1, 1, 10.0, 50.0 + 60 * steps))
    out += r.lines(ev.Phase("export", "", steps, 50.0 + 60 * steps))
    return r, out


def test_streams_and_ranks():
    _, out = run_lines()
    every = [line for line in out if line.text.startswith(("Initializing distributed", "LOCAL_RANK"))]
    assert [line.rank for line in every] == [0, 1, 0, 1]
    assert all(line.stream == STDERR for line in every)
    bars = [line for line in out if "%|" in line.text]
    assert bars and all(line.stream == STDOUT and line.rank == 0 for line in bars)
    rest = [line for line in out if line not in every and line not in bars]
    assert all(line.stream == STDERR and line.rank == 0 for line in rest)
    assert rest[-1].text == "`Trainer.fit` stopped: `max_steps=4` reached."
    assert bars[-1].text.endswith(", v_num=0, train_loss=6.000, val_loss=6.500]")


def test_the_banner_by_version():
    assert [line.text for line in run_lines("lightning@2.4")[1][:4]] == [
        "Using bfloat16 Automatic Mixed Precision (AMP)", "GPU available: True (cuda), used: True",
        "TPU available: False, using: 0 TPU cores", "HPU available: False, using: 0 HPUs"]
    newest = [line.text for line in run_lines("lightning@2.6")[1][:6]]
    # The default logger's warning (no tensorboard installed: a CSVLogger) comes
    # between the device lines and 2.6's LitLogger tip (trainer.py at 2.6.5).
    assert newest[3].endswith("logger_connector.py:76: Starting from v1.9.0, `tensorboardX` has been removed as a "
                              "dependency of the `lightning.pytorch` package, due to potential conflicts with other "
                              "packages in the ML ecosystem. For this reason, `logger=True` will use `CSVLogger` as "
                              "the default logger, unless the `tensorboard` or `tensorboardX` packages are found. "
                              "Please `pip install lightning[extra]` or one of them to enable TensorBoard support "
                              "by default")
    assert newest[4].startswith("💡 Tip: For seamless cloud logging") and newest[5].startswith("💡 Tip: For seamless "
                                                                                                 "cloud uploads")
    older = run_lines("lightning@2.4")[1][4]
    assert older.text.startswith("/opt/conda/lib/python3.11/site-packages/lightning/pytorch/trainer/connectors/"
                                 "logger_connector/logger_connector.py:75: Starting from v1.9.0")
    assert (older.stream, older.rank) == (STDERR, 0)  # rank_zero_warn
    texts = [line.text for line in run_lines()[1]]
    block = texts.index("-" * 100)
    assert texts[block:block + 6] == ["-" * 100, "distributed_backend=nccl",
                                      "All distributed processes registered. Starting with 2 processes", "-" * 100, "",
                                      "You are using a CUDA device ('NVIDIA H100 80GB HBM3') that has Tensor Cores. "
                                      "To properly utilize them, you should set `torch.set_float32_matmul_precision("
                                      "'medium' | 'high')` which will trade-off precision for performance. For more "
                                      "details, read https://pytorch.org/docs/stable/generated/torch.set_float32_"
                                      "matmul_precision.html#torch.set_float32_matmul_precision"]


def test_the_train_bar_counts_micro_batches_over_the_epoch():
    r, out = run_lines()
    h = r.ident.hyper
    first = next(line.text for line in out if line.text.startswith("Epoch 0:"))
    total = h.steps_per_epoch * h.grad_accum
    # smoothing=0: the rate is the batches so far over the epoch's elapsed time.
    assert f"| {h.grad_accum}/{total} [01:00<" in first
    assert f"{h.grad_accum / 60:5.2f}it/s, v_num=0, train_loss=9.000]" in first


def test_a_gpu_without_bf16_trains_in_16_mixed():
    """Trainer(precision="16-mixed") on a V100: accelerator_connector.py's AMP
    line says 16bit, 2.6's ModelSummary warns about 16-mixed, and Lightning's
    TF32 advice (Ampere and later only) is not given."""
    texts = [line.text for line in run_lines("lightning@2.6", gpu="Tesla V100-SXM2-32GB")[1]]
    assert texts[0] == "Using 16bit Automatic Mixed Precision (AMP)"
    assert any(x.endswith("Precision 16-mixed is not supported by the model summary.  Estimated model size in MB "
                          "will not be accurate. Using 32 bits instead.") for x in texts)
    assert not any("Tensor Cores" in x for x in texts)
    bf16 = [line.text for line in run_lines("lightning@2.6")[1]]
    assert any("Precision bf16-mixed is not supported" in x for x in bf16)


def test_catalog_versions_pin_each_lightning():
    assert {row.lightning for row in catalog.versions()} == {"2.4.0", "2.5.0", "2.6.6"}


def lightning_text(key: str, **values: object) -> list[str]:
    config = plan(RunConfig(Topology(1, 2), seed=5, max_steps=12, style=styles.parse("lightning")))
    return script_text(config, key, **values).split("\n")


def test_failures_run_through_lightnings_frames():
    """A real Lightning 2.5.0 / torch 2.5.1 / CPython 3.11 traceback's frames, in order."""
    sizes = dict(device="1", tried="7.44 GiB", total="44.44 GiB", free="5.33 GiB", in_use="39.11 GiB",
                 allocated="30.00 GiB", unallocated="8.59 GiB")
    oom, crash = lightning_text("oom", **sizes), lightning_text("crash")
    lost = lightning_text("peer_lost", peer="gpu-node-16", port=4242)
    for lines in (oom, crash, lost):
        assert lines[0] == "Traceback (most recent call last):"
        assert lines[3:5] == ['  File "/workspace/train.py", line 181, in main',
                              "    trainer.fit(model, datamodule=datamodule)"]
        assert lines[5] == '  File "/opt/conda/lib/python3.11/site-packages/lightning/pytorch/trainer/trainer.py", ' \
                           'line 539, in fit'
        assert not any("{" in line for line in lines)
    assert oom[-4] == '  File "/opt/conda/lib/python3.11/site-packages/torch/autograd/graph.py", line 825, in ' \
                      '_engine_run_backward'
    assert oom[-1].startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 7.44 GiB. GPU 1 ")
    assert crash[-5] == "    torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)"
    assert crash[-4] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert '    self.log("train_loss", loss, prog_bar=True, sync_dist=True)' in lost
    assert lost[-1] == "socketProgress: Connection closed by remote peer gpu-node-16<4242>"


# -- the Trainer's arguments, cadence and files (issue 20) -----------------------
def _hyper(total: int, per_epoch: int, accum: int = 1) -> jobs.Hyper:
    return jobs.Hyper(seq_len=2048, micro_batch=4, grad_accum=accum, global_batch=8 * accum, max_lr=3e-4,
                      min_lr=3e-5, warmup_steps=2, total_steps=total, epochs=-(-total // per_epoch),
                      steps_per_epoch=per_epoch, eval_every=7, log_every=5, eval_batches=20)


def test_the_default_cadence_validates_and_saves_at_epoch_ends():
    """val_check_interval=1.0: a validation at each epoch's last batch only;
    the checkpoint in on_train_epoch_end, which also runs when max_steps
    stops the epoch short (fit_loop.py, model_checkpoint.py at 2.5.0)."""
    cadence = lightning_args.cadence([])
    assert cadence == jobs.CADENCES["lightning"]
    short = cadence.applied(_hyper(12, 1000))
    assert short.eval_steps() == [] and short.save_steps() == [12]
    epochs = cadence.applied(_hyper(25, 10))
    assert epochs.eval_steps() == [10, 20] and epochs.save_steps() == [10, 20, 25]


def test_val_check_interval_counts_batches_and_moves_the_save():
    """An int counts training batches (accumulated ones too), a float is a
    share of the epoch's; either way the checkpoint follows each validation
    and none comes at the end (_should_save_on_train_epoch_end is False)."""
    by_batches = lightning_args.cadence(["--trainer.val_check_interval", "8"]).applied(_hyper(25, 10, accum=2))
    assert by_batches.eval_steps() == [4, 8, 12, 16, 20, 24] == by_batches.save_steps()
    by_share = lightning_args.cadence(["--trainer.val_check_interval=0.5"]).applied(_hyper(25, 10, accum=2))
    assert by_share.eval_steps() == [5, 10, 15, 20, 25] == by_share.save_steps()
    whole = lightning_args.cadence(["--trainer.val_check_interval", "1.0"]).applied(_hyper(25, 10))
    assert whole.eval_steps() == [10, 20]  # 1.0 is the whole epoch, 1 would be every batch
    assert lightning_args.cadence(["--trainer.val_check_interval", "1"]).applied(_hyper(3, 10)).eval_steps() == \
        [1, 2, 3]


def test_no_validation_and_no_checkpointing():
    none = lightning_args.cadence(["--trainer.limit_val_batches", "0"]).applied(_hyper(25, 10))
    assert none.eval_steps() == [] and none.save_steps() == [10, 20, 25]  # saved in on_train_epoch_end
    assert lightning_args.cadence(["--trainer.limit_val_batches", "5"]).applied(_hyper(25, 10)).eval_batches == 5
    assert lightning_args.cadence(["--trainer.limit_val_batches", "0.25"]).applied(_hyper(25, 10)).eval_batches == 5
    off = lightning_args.cadence(["--trainer.enable_checkpointing", "false"]).applied(_hyper(25, 10))
    assert off.save_steps() == [] and off.eval_steps() == [10, 20]
    every_2 = lightning_args.cadence(["--trainer.check_val_every_n_epoch", "2"]).applied(_hyper(45, 10))
    assert every_2.eval_steps() == [20, 40] == every_2.save_steps()  # saved after validation then


def test_trainer_arguments_are_read_with_their_meaning():
    script = script_args.read("train.py", ["fit", "--trainer.max_steps", "300", "--trainer.accumulate_grad_batches=4",
                                           "--trainer.log_every_n_steps", "10", "--model.learning_rate", "2e-4",
                                           "--trainer.default_root_dir", "runs", "--ckpt_path", "a/b.ckpt",
                                           "--trainer.strategy", "deepspeed_stage_3"])
    assert (script.style, script.max_steps, script.output_dir, script.resume) == \
        ("lightning", 300, Path("runs"), "a/b.ckpt")
    a = script.asked
    assert (a.grad_accum, a.log_every, a.lr, a.strategy.stages) == (4, 10, 2e-4, (3,))
    assert script_args.read("train.py", ["--trainer.max_steps", "-1"]).max_steps is None  # -1: no limit


@pytest.mark.parametrize("args,said", [
    (["--trainer.max_step", "5"], "Unrecognized arguments: --trainer.max_step 5"),
    (["--trainer.gpus=2"], "Unrecognized arguments: --trainer.gpus=2"),
    (["--trainer.max_steps", "five"], "--trainer.max_steps 'five': expected a whole number"),
    (["--trainer.val_check_interval", "1.5"], "a share of them from 0.0 to 1.0"),
    (["--trainer.enable_checkpointing", "maybe"], "expected true or false"),
    (["--trainer.accumulate_grad_batches", "0"], "a whole number of at least 1"),
])
def test_what_lightningcli_refuses_in_one_line(args, said):
    with pytest.raises(UsageError) as caught:
        script_args.read("train.py", ["fit", *args])
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_devices_and_nodes_must_make_the_world():
    script = script_args.read("train.py", ["--trainer.devices", "[0,1,2,3]", "--trainer.num_nodes", "2"])
    script.check_world(4, 2)
    script_args.read("train.py", ["--trainer.devices", "auto"]).check_world(8, 1)
    with pytest.raises(UsageError, match=r"You set `devices=4` and `num_nodes=2` in Lightning, but the product "
                                         r"\(4 \* 2\) does not match the world size \(16\)\."):
        script.check_world(8, 2)


def _writer(root: Path, steps: int, log_every: int = 10) -> tuple[LightningWriter, identity.Identity]:
    ident = identity.build(5, 1, 2, total_steps=steps, model="Qwen2.5-1.5B")
    ident = dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, log_every=log_every,
                                                                 steps_per_epoch=10_000))
    writer = LightningWriter(layouts.Saving(root, ident, 5))
    writer.event(_launch(root, ident))
    return writer, ident


def _launch(root: Path | None, ident: identity.Identity, attempt: int = 0) -> ev.RunStarted:
    """The RunStarted of a Lightning launch into `root` (its logger's version found as the launcher finds it)."""
    config = RunConfig(Topology(1, 2), seed=5, style=styles.parse("lightning"), output_dir=root, identity=ident)
    return build.run_started(config, attempt, 1, 0.0)


def _step(step: int) -> ev.Step:
    return ev.Step(step, 250, 5.0 + 1 / step, 9.0, 11.0, 1e-4, epoch=1, time=100.0 + step, step_time_s=1.0)


def test_metrics_csv_on_disk_as_a_tailing_reader_sees_it(tmp_path):
    """CSVLogger writes at each logged step that reaches a multiple of
    flush_logs_every_n_steps (100) and at the end; a key new since the last
    write rewrites the file under the new header (csv_logs.py at 2.5.0)."""
    writer, _ = _writer(tmp_path, 250)
    metrics = tmp_path / "lightning_logs/version_0/metrics.csv"
    writer.event(ev.Phase("train", "", 0, 100.0))
    assert (tmp_path / "lightning_logs/version_0/hparams.yaml").exists() and not metrics.exists()
    for step in range(1, 100):
        writer.event(_step(step))
    assert not metrics.exists()
    writer.event(_step(100))
    lines = metrics.read_text().splitlines()
    assert lines[0] == "epoch,step,train_loss" and [r.split(",")[1] for r in lines[1:]] == \
        [str(s) for s in range(9, 100, 10)]
    assert lines[1] == f"0,9,{struct.unpack('f', struct.pack('f', 5.1))[0]!r}"  # float32, as tensor.item()
    for step in range(101, 200):
        writer.event(_step(step))
        if step == 150:
            writer.event(ev.Validation(150, 1, 4.5, 90.0, 3.0, 80, 260.0))
    assert metrics.read_text().splitlines() == lines  # nothing more until step 200
    writer.event(_step(200))
    after = metrics.read_text().splitlines()
    assert after[0] == "epoch,step,train_loss,val_loss" and after[1] == lines[1] + ","
    assert after[after.index("0,149,5.006666660308838,") + 1] == "0,149,,4.5"  # the validation's own row
    writer.event(_step(210))
    writer.event(ev.Phase("export", "", 210, 400.0))
    assert metrics.read_text().splitlines()[-1].startswith("0,209,")


def test_the_next_version_and_top_1(tmp_path):
    (tmp_path / "lightning_logs/version_3").mkdir(parents=True)
    (tmp_path / "lightning_logs/version_x").mkdir()
    (tmp_path / "lightning_logs/version_9").touch()  # a file, not a version
    writer, _ = _writer(tmp_path, 20)
    assert writer.dir == tmp_path / "lightning_logs/version_4"
    for step in (10, 20):
        writer.event(_step(step))
        writer.event(ev.Checkpoint(step, 1, "x/", 1, 1, 1, 1.0, 200.0 + step))
    assert [p.name for p in (writer.dir / "checkpoints").iterdir()] == ["epoch=0-step=20.ckpt"]
    found = lightning_ckpt.find(tmp_path)
    assert (found.step, found.seed, found.model, found.time) == (20, 5, "Qwen2.5-1.5B", 220.0)
    assert lightning_ckpt.find(writer.dir / "checkpoints/epoch=0-step=20.ckpt").step == 20


class _Runs:
    """Pickled, it would call os.system when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _AttributeDict(dict):
    """As lightning.fabric.utilities.data.AttributeDict, a module's hparams: a dict subclass (NEWOBJ, SETITEMS)."""


def _ckpt(path: Path, body: object) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(body, protocol=2))
    return path


def test_a_real_checkpoint_reads_and_runs_nothing(tmp_path):
    """A real .ckpt names classes (an OrderedDict state_dict, tensors rebuilt
    by torch._utils): each becomes an inert stand-in, nothing is imported or
    called, and the plain fields come through."""
    marker = tmp_path / "ran"
    body = {"global_step": 5, "state_dict": collections.OrderedDict(w=Path("tensor")), "x": _Runs(marker),
            "hyper_parameters": _AttributeDict(seed=3, model_name_or_path="Qwen2.5-1.5B")}
    found = lightning_ckpt.find(_ckpt(tmp_path / "epoch=0-step=5.ckpt", body))
    assert (found.step, found.seed, found.model) == (5, 3, "Qwen2.5-1.5B") and not marker.exists()
    with pytest.raises(CheckpointError, match="global_step should be a whole number"):
        lightning_ckpt.find(_ckpt(tmp_path / "epoch=0-step=6.ckpt", {"global_step": "6"}))
    (tmp_path / "epoch=0-step=7.ckpt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="not a checkpoint torch.save wrote"):
        lightning_ckpt.find(tmp_path / "epoch=0-step=7.ckpt")
    assert lightning_ckpt.find(tmp_path).step == 5  # the latest that reads
    (tmp_path / "lightning_logs").mkdir()
    with pytest.raises(CheckpointError, match="no epoch=<E>-step=<S>.ckpt under it"):
        lightning_ckpt.find(tmp_path / "lightning_logs")


def _launched(version: str, *args: str) -> list:
    (pinned,) = styles.parse(version).versions()
    ident = identity.build(5, 1, 2, total_steps=4, model="Qwen2.5-1.5B", versions=pinned)
    r = LightningLines(100, None)
    r.launched(ev.RunStarted("id", 2, 1, 2, 0, 5, "train.py", list(args), 4, "127.0.0.1", 29500, 1, 0, 0.0))
    r.lines(ev.RunIdentity(ident))
    return r.banner(0.0)


def test_a_lightningcli_script_seeds_first():
    """cli.py _set_seed: seed_everything=True (the default) with no
    PL_GLOBAL_SEED seeds 0 and warns from fabric/utilities/seed.py (line 42 at
    2.4.0 and 2.5.0, 44 at 2.6.5); every rank logs its seed."""
    out = _launched("lightning@2.6", "fit", "--trainer.max_steps", "4")
    assert [(line.text, line.rank) for line in out[:3]] == [
        ("/opt/conda/lib/python3.12/site-packages/lightning/fabric/utilities/seed.py:44: No seed found, seed set to 0",
         0), ("[rank: 0] Seed set to 0", 0), ("[rank: 1] Seed set to 0", 1)]
    assert all(line.stream == STDERR for line in out[:3])
    assert [line.text for line in _launched("lightning", "fit", "--seed_everything=7")[:2]] == [
        "[rank: 0] Seed set to 7", "[rank: 1] Seed set to 7"]
    assert not any("Seed" in line.text for line in _launched("lightning", "fit", "--seed_everything", "false"))
    assert not any("Seed" in line.text for line in _launched("lightning"))  # a plain Trainer script: no CLI


def test_trainer_precision_as_the_accelerator_connector_takes_it():
    """fabric/connector.py converts the aliases 16 and bf16 with a warning
    (line 573 at 2.5.0, 572 at 2.4.0 and 2.6.5); only a mixed precision gets
    the AMP line; 2.6's ModelSummary sizes a true half precision at 16 bits
    and warns for a mixed one (2.4 and 2.5 size everything at 32)."""
    site = "/opt/conda/lib/python3.11/site-packages/lightning/fabric/connector.py"
    said = [line.text for line in _launched("lightning", "fit", "--trainer.precision", "16")]
    assert said[3:5] == [f"{site}:573: `precision=16` is supported for historical reasons but its usage is "
                         "discouraged. Please set your precision to 16-mixed instead!",
                         "Using 16bit Automatic Mixed Precision (AMP)"]
    assert not any("Automatic Mixed Precision" in line.text
                   for line in _launched("lightning", "fit", "--trainer.precision=32-true"))
    r = run_lines("lightning@2.6")[0]
    r.launched(ev.RunStarted("id", 2, 1, 2, 0, 5, "train.py", ["fit", "--trainer.precision", "bf16-true"], 4,
                             "127.0.0.1", 29500, 1, 0, 0.0))
    summary = r._summary()
    assert not any("is not supported by the model summary" in text for text in summary)
    size = next(text for text in summary if text.endswith("Total estimated model params size (MB)"))
    assert size.startswith(f"{r.ident.model.params * 2e-6:,.3f}")  # 16 bits a parameter
    with pytest.raises(UsageError, match="--trainer.precision 'fp8': expected one of transformer-engine"):
        script_args.read("train.py", ["fit", "--trainer.precision", "fp8"])


def test_a_stopping_step_is_logged_and_saved_at_once(tmp_path):
    writer, _ = _writer(tmp_path, 250)
    for step in range(1, 38):
        writer.event(_step(step))
    writer.event(dataclasses.replace(_step(38), stopped=True))
    rows = (tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["9", "19", "29", "37"]


def test_the_version_shown_is_the_launchs_and_a_restart_takes_the_next(tmp_path, monkeypatch):
    """v_num is RunStarted.logger_version, the next free version under the
    root (here the cwd, the Trainer's default root). Without an output
    directory nothing is written, so a restarted script's launch cannot see
    the version its predecessor's logger made at fit start: the screen
    counts it (real Lightning would find it on disk)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lightning_logs/version_2").mkdir(parents=True)
    ident = identity.build(5, 1, 2, total_steps=4, model="Qwen2.5-1.5B")
    r = LightningLines(100, None)
    shown = []
    for attempt in (0, 1):
        if attempt:
            r.lines(ev.Restart(1, 1, 0, 400.0))
        r.launched(_launch(None, ident, attempt))
        r.lines(ev.RunIdentity(ident))
        r.banner(400.0 * attempt)
        r.lines(ev.Phase("train", "", 0, 400.0 * attempt + 10))
        bar = r.lines(ev.Step(4, 4, 6.0, 9.0, 11.0, 1.0, epoch=1, time=400.0 * attempt + 300, step_time_s=60.0))
        shown += re.findall(r"v_num=(\d+)", bar[0].text)
    assert shown == ["3", "4"]
