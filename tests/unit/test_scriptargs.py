"""The training script's arguments read as the job (the torchrun drop-in)."""

from __future__ import annotations

import os

import pytest

from fakerun.cli.main import build_parser, to_config
from fakerun.config import script_args as scriptargs
from fakerun.errors import UsageError

# Llama-3.2-1B: under plain DDP (the Trainer without --fsdp or --deepspeed), Llama-3.1-8B would need
# 160 GB a GPU (fp32 weights, grads and Adam, and DDP's buckets): no real job on 2 GPUs.
HF = ("train.py", "--model_name_or_path", "meta-llama/Llama-3.2-1B", "--per_device_train_batch_size", "4",
      "--max_steps", "20", "--output_dir", "out")


def config(*argv: str):
    return to_config(build_parser().parse_args(["--nproc-per-node", "2", *argv]), environ={})


def test_the_hf_launch_line_is_the_job():
    c = config(*HF)
    h = c.identity.hyper
    assert (str(c.style), c.identity.model.name, c.steps, str(c.output_dir)) == ("hf", "Llama-3.2-1B", 20, "out")
    assert (h.micro_batch, h.grad_accum, h.max_lr, h.log_every) == (4, 1, 5e-05, 500)  # TrainingArguments'
    assert h.global_batch == 4 * c.identity.parallel.dp
    assert h.pretrained_tokens > 0  # a fine-tune starts from its base model


def test_fakerun_options_win_over_the_script_s():
    c = config("--max-steps", "7", "--style", "torchrun", "--output-dir", "mine", *HF)
    assert (c.steps, str(c.style), str(c.output_dir)) == (7, "torchrun", "mine")


def test_equals_spelling_and_seeded_draws_for_the_rest():
    a = config("--seed", "1", "train.py", "--learning_rate=3e-4", "--gradient_accumulation_steps=8",
               "--num_train_epochs=2")
    assert (a.identity.hyper.max_lr, a.identity.hyper.grad_accum, a.identity.hyper.epochs) == (3e-4, 8, 2)
    assert a.identity.model == config("--seed", "1", "train.py", "--learning_rate", "1e-5").identity.model  # the seed's


def test_megatron_flags_describe_the_model():
    c = config("pretrain_gpt.py", "--num-layers", "24", "--hidden-size", "2048", "--num-attention-heads", "16",
               "--seq-length", "2048", "--micro-batch-size", "2", "--global-batch-size", "64",
               "--train-iters", "30", "--lr", "3e-4", "--save", "ckpt", "--save-interval", "10")
    m, h = c.identity.model, c.identity.hyper
    assert str(c.style) == "megatron" and (m.layers, m.hidden, m.heads, m.arch) == (24, 2048, 16, "GPTModel")
    assert 1.2e9 < m.params < 1.4e9  # GPT-3 XL's shape: 1.3B
    assert (h.seq_len, h.micro_batch, h.global_batch, h.max_lr, c.steps) == (2048, 2, 64, 3e-4, 30)
    assert str(c.output_dir) == "ckpt" and h.log_every == 100  # Megatron's default --log-interval


@pytest.mark.parametrize("argv,style", [
    (("pretrain_gpt.py",), "megatron"), (("train.py", "--deepspeed", "ds.json"), "deepspeed"),
    (("main.py", "fit", "--trainer.max_steps=10"), "lightning"), (("train.py", "--foo", "1"), "torchrun")])
def test_the_style_follows_the_framework(argv, style):
    assert str(config(*argv).style).split("@")[0] == style


@pytest.mark.parametrize("name,expect", [("meta-llama/Llama-3.1-8B", "Llama-3.1-8B"),
                                         ("./ckpts/my-llama-7b-sft", "Llama-2-7b-hf"),
                                         ("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5-72B")])
def test_hub_ids_and_fine_tunes_map_to_a_known_shape(name, expect):
    model = scriptargs.read("train.py", ["--model_name_or_path", name]).asked.model
    base = next(m for m in scriptargs.catalog.models() if m.name == expect)
    assert (model.params, model.layers) == (base.params, base.layers)
    assert model.name == name.rsplit("/", 1)[-1]


def test_a_bad_value_is_a_one_line_usage_error():
    with pytest.raises(UsageError, match=r"^training script argument --max_steps 'abc': expected a whole number$"):
        config("train.py", "--max_steps", "abc")


@pytest.mark.parametrize("argv,says", [
    (("train.py", "--learning_rate", "nan"), "Invalid learning rate: nan (torch.optim.AdamW refuses it)"),
    (("train.py", "--learning_rate", "-1"), "Invalid learning rate: -1.0"),
    (("pretrain_gpt.py", "--lr", "1e400"), "--lr '1e400': expected a finite number"),
    (("train.py", "--num_train_epochs", "inf"), "expected a finite number"),  # OverflowError in math.ceil
    (("train.py", "--per_device_train_batch_size", "0"), "must be at least 1 (the script itself refuses it)"),
    (("train.py", "--gradient_accumulation_steps", "-3"), "must be at least 1"),
    (("pretrain_gpt.py", "--micro-batch-size", "0"), "must be at least 1"),
    (("pretrain_gpt.py", "--num-layers", "9" * 400, "--hidden-size", "64"),  # OverflowError: int too large
     "--num-layers '99999999999999999999...99999999': expected a whole number of at most 9223372036854775807"),
])
def test_what_the_script_itself_or_an_int64_refuses_is_one_line(argv, says):
    with pytest.raises(UsageError, match="^training script argument ") as caught:
        config(*argv)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["llama-0b", "llama-" + "9" * 400 + "b"])
def test_a_size_no_model_has_names_the_family_s_first(name):
    """`0b` divided by zero, 400 digits took the log of 0: no size said."""
    model = scriptargs.read("train.py", ["--model_name_or_path", name]).asked.model
    assert model.name == name and model.params == scriptargs.catalog.models()[0].params


@pytest.mark.parametrize("argv,says", [
    (("train.py", "--max_steps"), "training script argument --max_steps: expected one argument"),
    (("train.py", "--learning_rate", "-inf"), "training script argument --learning_rate: expected one argument"),
])
def test_a_flag_without_its_value_is_one_line_as_the_script_s_parser_says(argv, says):
    """It was argparse's usage block, as `__main__.py`, and exit 2."""
    with pytest.raises(UsageError) as caught:
        config(*argv)
    assert str(caught.value) == f"{says} (the script's own parser refuses it)"


# -- what the launch line fixes of the memory layout ---------------------------------
@pytest.mark.parametrize("argv,kind,stages,recompute", [
    (("train.py", "--model_name_or_path", "gpt2"), "ddp", (), "none"),  # the Trainer without a sharding flag
    (("train.py", "--model_name_or_path", "gpt2", "--fsdp", "full_shard auto_wrap"), "fsdp", (3,), "none"),
    (("train.py", "--model_name_or_path", "gpt2", "--fsdp=shard_grad_op", "--gradient_checkpointing"),
     "fsdp", (2,), "full"),
    (("train.py", "--model_name_or_path", "gpt2", "--deepspeed", "missing.json"), "zero", (2, 3), "none"),
    (("train.py", "--trainer.strategy", "deepspeed_stage_3"), "zero", (3,), None),
    (("train.py", "--trainer.strategy=deepspeed"), "zero", (2,), None),  # DeepSpeedStrategy(stage=2)
    (("lightning_train.py", "--trainer.max_steps", "5"), "ddp", (), None),
    (("pretrain_gpt.py", "--num-layers", "4", "--hidden-size", "512"), "megatron", (0,), "none"),
    (("pretrain_gpt.py", "--use-distributed-optimizer", "--recompute-activations"), "megatron", (1,), "selective"),
])
def test_the_launch_line_fixes_how_the_state_is_sharded(argv, kind, stages, recompute):
    strategy = scriptargs.read(argv[0], list(argv[1:])).asked.strategy
    assert (strategy.kind, strategy.stages, strategy.recompute) == (kind, stages, recompute)


def test_megatron_parallel_sizes_default_to_one_as_megatrons_arguments():
    strategy = scriptargs.read("pretrain_gpt.py", ["--tensor-model-parallel-size", "4"]).asked.strategy
    assert (strategy.tp, strategy.pp) == (4, 1)


def test_a_deepspeed_config_s_stage_is_read_and_a_fifo_never_opened(tmp_path):
    config_file = tmp_path / "ds.json"
    config_file.write_text('{"zero_optimization": {"stage": 1}, "bf16": {"enabled": true}}')
    argv = ["--model_name_or_path", "gpt2", "--deepspeed", str(config_file)]
    assert scriptargs.read("train.py", argv).asked.strategy.stages == (1,)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it would block until a writer came
    argv = ["--model_name_or_path", "gpt2", "--deepspeed", str(fifo)]
    assert scriptargs.read("train.py", argv).asked.strategy.stages == (2, 3)
