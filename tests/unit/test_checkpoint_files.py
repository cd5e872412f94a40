"""What a checkpoint's files hold: the model's real tensors in safetensors
headers, torch.save archives that run nothing on load, transformers' JSON
schemas, and no trace of fakerun."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.checkpoint import RESUME, STATE, CheckpointWriter, find, safetensors, torchsave
from fakerun.checkpoint.layouts import Saving
from fakerun.checkpoint.model_files import ModelFiles
from fakerun.checkpoint.store import keeps_holes
from fakerun.world import catalog, tensors
from fakerun.world.catalog import models
from fakerun.world.identity import build
from fakerun.world.tensors import Tensor, layout
from fakerun.world.trainer import TrainerArgs

# TrainerState's fields (trainer_callback.py): what TrainerState(**json)
# accepts, and save_to_json writes, sorted. The same at v4.42.4, v4.44.2 and
# v4.46.3; v5.0.0 adds best_global_step.
TRAINER_STATE = ["best_metric", "best_model_checkpoint", "epoch", "eval_steps", "global_step",
                 "is_hyper_param_search", "is_local_process_zero", "is_world_process_zero", "log_history",
                 "logging_steps", "max_steps", "num_input_tokens_seen", "num_train_epochs", "save_steps",
                 "stateful_callbacks", "total_flos", "train_batch_size", "trial_name", "trial_params"]
TRAINER_STATE_5 = sorted([*TRAINER_STATE, "best_global_step"])
# Opcodes that import or call: a pickle without them only builds plain data.
RUNS_CODE = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2",
             "EXT4", "PERSID", "BINPERSID"}


def find_model(name: str) -> catalog.Model:
    return catalog.find(catalog.models(), name, "model")


def header(raw: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8:8 + length])


@pytest.mark.parametrize("model", [m for m in models() if not m.name.startswith("OLMo")], ids=lambda m: m.name)
def test_the_tensors_add_up_to_the_catalogs_parameters(model):
    lay = layout(model)
    assert sum(t.nbytes for t in lay.tensors) == 2 * model.params
    assert len({t.name for t in lay.tensors}) == len(lay.tensors)


def test_published_shapes_come_out():
    """Llama-3.2-1B: tied, intermediate 8192; Llama-3.1-8B: 14336, with an
    lm_head; Mixtral's experts; Gemma-2's head_dim of 256; OLMo-2's 11008,
    whose catalog count is 606,208 short of its shapes' (their config.json
    files on the Hub)."""
    small, big = layout(find_model("Llama-3.2-1B")), layout(find_model("Llama-3.1-8B"))
    assert (small.intermediate, small.tied, big.intermediate, big.tied) == (8192, True, 14336, False)
    names = {t.name: t.shape for t in big.tensors}
    assert names["model.layers.0.self_attn.k_proj.weight"] == (1024, 4096)
    assert names["lm_head.weight"] == (128256, 4096) and "lm_head.weight" not in {t.name for t in small.tensors}
    moe = {t.name for t in layout(find_model("Mixtral-8x7B-v0.1")).tensors}
    assert "model.layers.31.block_sparse_moe.experts.7.w3.weight" in moe
    gemma = layout(find_model("gemma-2-9b"))
    assert gemma.intermediate == 14336 and gemma.tensors[1].shape == (4096, 3584)  # q_proj: 16 heads of 256
    assert layout(find_model("OLMo-2-1124-7B")).intermediate == 11008


def test_sharding_follows_huggingface_hub():
    """5 GB a shard in transformers 4.x, filled in order; a larger tensor gets
    a shard of its own at once, the shard being filled goes on; one shard is
    model.safetensors. 50 GB in 5.x (modeling_utils.py at v5.0.0)."""
    big = Tensor("a", (3 * 10**9,))  # 6 GB
    parts = safetensors.shards((Tensor("x", (10**9,)), Tensor("y", (10**9,)), big, Tensor("z", (10,))), "4.46.3")
    assert [[t.name for t in s.tensors] for s in parts] == [["a"], ["x", "y", "z"]]
    assert [s.name for s in parts] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    parts = safetensors.shards((Tensor("x", (2 * 10**9,)), Tensor("y", (10**9,)), Tensor("z", (10,))), "4.42.4")
    assert [[t.name for t in s.tensors] for s in parts] == [["x"], ["y", "z"]]
    assert [s.name for s in safetensors.shards((Tensor("x", (4,)),), "4.44.2")] == ["model.safetensors"]
    llama70 = layout(find_model("Llama-3.1-70B")).tensors
    assert len(safetensors.shards(llama70, "4.46.3")) == 30  # as published
    assert len(safetensors.shards(llama70, "5.0.0")) == 3  # 141 GB in 50 GB shards
    assert [s.name for s in safetensors.shards(layout(find_model("Llama-3.1-8B")).tensors, "5.0.0")] == \
        ["model.safetensors"]  # 16 GB: one file under 5.x, four under 4.x
    assert tensors.shard_count(find_model("Llama-3.1-8B"), "4.46.3") == 4


def test_a_shard_header_is_the_safetensors_format():
    shard = safetensors.shards(layout(find_model("Llama-3.2-1B")).tensors, "4.46.3")[0]
    raw = shard.header()
    length, body = header(raw)
    assert len(raw) == 8 + length and length % 8 == 0 and raw.endswith((b"}", b" "))
    assert list(body)[0] == "__metadata__" and body.pop("__metadata__") == {"format": "pt"}
    assert list(body) == sorted(body)
    offsets = [t["data_offsets"] for t in body.values()]
    assert offsets[0][0] == 0 and all(a[1] == b[0] for a, b in zip(offsets, offsets[1:], strict=False))
    assert shard.size() == len(raw) + offsets[-1][1]
    assert body["model.embed_tokens.weight"] == {"dtype": "BF16", "shape": [128256, 2048],
                                                 "data_offsets": body["model.embed_tokens.weight"]["data_offsets"]}


def test_a_run_without_bf16_saves_fp16_weights(tmp_path):
    """On a V100 the weights a checkpoint holds are fp16: F16 in the
    safetensors headers, torch_dtype float16 in config.json."""
    ident = build(4, 1, 2, 6, model="Qwen2.5-1.5B", gpu="Tesla V100-SXM2-32GB")
    files = ModelFiles(ident)
    assert {t.dtype for t in files.layout.tensors} == {"F16"}
    assert json.loads(files.config())["torch_dtype"] == "float16"
    a100 = ModelFiles(build(4, 1, 2, 6, model="Qwen2.5-1.5B", gpu="NVIDIA A100-SXM4-80GB"))
    assert {t.dtype for t in a100.layout.tensors} == {"BF16"}
    assert json.loads(a100.config())["torch_dtype"] == "bfloat16"


def test_a_torch_save_archive_runs_nothing_on_load():
    obj = {"base_lrs": [1e-4], "last_epoch": 3, "lr_lambdas": [None], "t": (1, 2.0)}
    raw = torchsave.archive("scheduler.pt", obj, "123", "2.5.1")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.namelist() == ["scheduler/data.pkl", "scheduler/byteorder", "scheduler/version",
                                 "scheduler/.data/serialization_id"]
        data = zf.read("scheduler/data.pkl")
    assert not {op.name for op, _, _ in pickletools.genops(data)} & RUNS_CODE
    assert pickle.loads(data) == obj


def start(path: Path) -> bytes:
    """A file's first MiB (all a header needs; a sparse shard is GBs of zeros)."""
    with open(path, "rb") as handle:
        return handle.read(1 << 20)


def pinned(ident, transformers: str):
    return dataclasses.replace(ident, versions=dataclasses.replace(ident.versions, transformers=transformers))


TRAINER = TrainerArgs()  # a Trainer's launch line with the defaults


def write_one(tmp_path: Path, sparse: bool = False, transformers: str = "4.46.3", nproc: int = 2,
              trainer: TrainerArgs | None = TRAINER) -> Path:
    """A Trainer's checkpoint-1 (its launch line read as the Trainer's: `trainer`)."""
    ident = pinned(build(6, 1, nproc, model="Llama-3.2-3B"), transformers)
    writer = CheckpointWriter(Saving(tmp_path, ident, 6, sparse=sparse, trainer=trainer))
    writer.event(ev.Step(step=1, max_steps=10, loss=2.5, loss_min=2.4, loss_max=2.6, grad_norm=1.0, lr=1e-4))
    writer.event(ev.Checkpoint(1, 1, str(tmp_path), 2, 1, 1, 1.0, 1234.5))
    return tmp_path / "checkpoint-1"


def test_a_checkpoint_has_no_trace_and_real_schemas(tmp_path):
    ckpt = write_one(tmp_path)
    for path in ckpt.iterdir():
        assert b"fakerun" not in path.read_bytes().lower(), path.name
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]  # no hidden file
    state = json.loads((ckpt / STATE).read_text())
    assert list(state) == TRAINER_STATE and state["global_step"] == 1
    index = json.loads((ckpt / safetensors.INDEX).read_text())
    for name in sorted(set(index["weight_map"].values())):  # headers only, the data left out
        raw = (ckpt / name).read_bytes()
        assert len(raw) == 8 + header(raw)[0]
    config = json.loads((ckpt / "config.json").read_text())
    assert (config["intermediate_size"], config["tie_word_embeddings"], config["model_type"]) == (8192, True, "llama")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth", "training_args.bin"):
        with zipfile.ZipFile(ckpt / name) as zf:
            data = zf.read(f"{Path(name).stem}/data.pkl")
            ident = zf.read(f"{Path(name).stem}/.data/serialization_id").decode()
        if name != "training_args.bin":
            assert not {op.name for op, _, _ in pickletools.genops(data)} & RUNS_CODE, name
        # Two unsigned 64-bit numbers, each 0-padded to 20 digits (inline_container.cc
        # writeSerializationId); 20 free digits could pass 2**64.
        assert len(ident) == 40 and all(int(ident[i:i + 20]) < 2**64 for i in (0, 20)), (name, ident)
    resumed = find(ckpt)
    # The step from trainer_state.json, the clock from the save's mtime, the
    # model from config.json; no seed (the command line's).
    assert (resumed.step, resumed.time, resumed.seed, resumed.model) == (1, 1234.5, None, "Llama-3.2-3B")


# Llama 3's tokenizer as save_pretrained writes it: 4.x's tokenizer_config.json,
# special_tokens_map.json, tokenizer.json; 5.x's no special tokens map
# (tests/fixtures/tokenizers/<version>.json).
TOKENIZER_4 = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
TOKENIZER_5 = ["tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize(("transformers", "nproc", "files"), [
    # Llama-3.2-3B's 6.4 GB: two shards of "5GB" in 4.x, one file under 5.x's "50GB"; one
    # process saves rng_state.pth, more one rng_state_<rank>.pth each (trainer.py `_save_rng_state`).
    ("4.42.4", 1, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                   "model.safetensors.index.json", "rng_state.pth", *TOKENIZER_4]),
    ("4.46.3", 2, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                   "model.safetensors.index.json", "rng_state_0.pth", "rng_state_1.pth", *TOKENIZER_4]),
    ("5.0.0", 2, ["model.safetensors", "rng_state_0.pth", "rng_state_1.pth", *TOKENIZER_5]),
])
def test_a_checkpoint_holds_the_versions_files(tmp_path, transformers, nproc, files):
    """trainer.py `_save_checkpoint` of each pinned transformers: save_model
    (config.json, generation_config.json, the weights, the tokenizer's
    files, training_args.bin), optimizer.pt, scheduler.pt, the RNG states,
    trainer_state.json; nothing else."""
    ckpt = write_one(tmp_path, transformers=transformers, nproc=nproc)
    common = ["config.json", "generation_config.json", "training_args.bin", "optimizer.pt", "scheduler.pt", STATE]
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(common + files)
    other = write_one(tmp_path / "other", transformers=transformers, nproc=nproc, trainer=None)
    assert "training_args.bin" not in {p.name for p in other.iterdir()}  # not a Trainer's line: none
    state = json.loads((ckpt / STATE).read_text())
    assert list(state) == (TRAINER_STATE_5 if transformers.startswith("5") else TRAINER_STATE)
    config = json.loads((ckpt / "config.json").read_text())
    dtype = "dtype" if transformers.startswith("5") else "torch_dtype"  # renamed in 5.0 (configuration_utils.py)
    assert config[dtype] == "bfloat16" and config["transformers_version"] == transformers
    assert list(config) == sorted(config)
    assert json.loads((ckpt / "generation_config.json").read_text()) == {
        "_from_model_config": True, "transformers_version": transformers}


def test_resume_reads_a_trainers_own_checkpoint_and_the_old_form(tmp_path):
    real = tmp_path / "checkpoint-4"
    real.mkdir()
    (real / STATE).write_text(json.dumps({"global_step": 4, "log_history": []}))
    saved = (real / STATE).stat().st_mtime  # when it was saved
    assert (find(real).step, find(real).time, find(real).seed, find(real).model) == (4, saved, None, None)
    old = tmp_path / "checkpoint-5"
    old.mkdir()
    (old / STATE).write_text(json.dumps({"global_step": 5, "fakerun": {"seed": 3, "model": "x", "time": 9.0}}))
    assert (find(old).seed, find(old).time) == (3, 9.0)
    (old / RESUME).write_text(json.dumps({"seed": 4, "time": 10.0}))  # the hidden file wins
    assert (find(old).seed, find(old).time) == (4, 10.0)


def test_sparse_shards_have_their_true_size(tmp_path):
    if not keeps_holes(tmp_path):
        pytest.skip(f"{tmp_path}'s file system keeps no holes")
    ckpt = write_one(tmp_path, sparse=True)
    index = json.loads((ckpt / safetensors.INDEX).read_text())
    names = sorted(set(index["weight_map"].values()))
    sizes = [(ckpt / n).stat().st_size for n in names]
    headers = [8 + header(start(ckpt / n))[0] for n in names]
    assert sum(sizes) - sum(headers) == index["metadata"]["total_size"]
    assert sum((ckpt / n).stat().st_blocks * 512 for n in names) < 1 << 20  # holes: no blocks
    from safetensors import safe_open  # the test extra's: the reader the tools use

    for name in names:
        with safe_open(str(ckpt / name), framework="np") as f:
            assert f.metadata() == {"format": "pt"}
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 - not a mapping
            assert shapes == {k: v["shape"] for k, v in header(start(ckpt / name))[1].items()
                              if k != "__metadata__"}


def test_a_file_system_without_holes_gets_headers_only(tmp_path, monkeypatch):
    monkeypatch.setattr("fakerun.checkpoint.store.keeps_holes", lambda folder: False)
    ckpt = write_one(tmp_path, sparse=True)
    # tokenizer.json is Llama 3's real 17 MB (--sparse-checkpoints is for the weights alone)
    assert all(os.path.getsize(p) < 1 << 20 for p in ckpt.iterdir() if p.name != "tokenizer.json")


def test_under_fsdp_the_trainer_saves_no_optimizer_pt(tmp_path):
    """trainer.py `_save_optimizer_and_scheduler` at v4.46.3: under FSDP the
    model and optimizer go through accelerate's save_fsdp_model and
    save_fsdp_optimizer (a full state dict by default: pytorch_model_fsdp.bin,
    optimizer.bin), never to optimizer.pt; scheduler.pt stays."""
    ident = build(6, 1, 2, model="Llama-3.2-3B")
    fsdp = dataclasses.replace(ident, parallel=dataclasses.replace(ident.parallel, kind="fsdp"))
    writer = CheckpointWriter(Saving(tmp_path, fsdp, 6))
    writer.event(ev.Checkpoint(1, 1, str(tmp_path), 2, 1, 1, 1.0, 1234.5))
    names = {p.name for p in (tmp_path / "checkpoint-1").iterdir()}
    assert "optimizer.pt" not in names and "scheduler.pt" in names
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= names
