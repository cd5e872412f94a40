"""--style lightning's exact strings: bar lines made by tqdm's format_meter
with Lightning 2.5.0's TQDMProgressBar.BAR_FORMAT and Tqdm.format_num
(Lightning-AI/pytorch-lightning src/lightning/pytorch/callbacks/progress/
tqdm_progress.py), Lightning's own docstring examples, and the renderer's
streams and ranks on a hand-made event sequence."""

from __future__ import annotations

import pytest

from fakerun import events as ev
from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
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
from fakerun.world import catalog, identity, styles
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
    newest = [line.text for line in run_lines("lightning@2.6")[1][:5]]
    assert newest[3].startswith("💡 Tip: For seamless cloud logging") and newest[4].startswith("💡 Tip: For seamless "
                                                                                                 "cloud uploads")
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
