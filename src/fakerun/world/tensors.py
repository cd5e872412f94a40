"""The simulated model's state dict as save_pretrained writes it: every
tensor's name, shape and dtype, from its architecture's table
(data/tensors.toml) and the catalog's sizes; and how save_pretrained splits
it into shard files, which the log lines count and the checkpoint writer
writes (so both come from here)."""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fakerun.world import tokenizers
from fakerun.world.catalog import Model

DTYPE = "BF16"  # config.json's torch_dtype "bfloat16": what the Trainer saves a bf16 run's weights in
# The safetensors dtype and config.json's torch_dtype of a run's half type
# (Gpu.precision): fp16 where the GPU has no bf16 (a V100).
DTYPES = {"bf16": ("BF16", "bfloat16"), "fp16": ("F16", "float16")}
DTYPE_BYTES = 2
ALIGN = 128  # what published intermediate sizes are multiples of


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = DTYPE

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES


@functools.cache
def _tables() -> dict[str, Any]:
    text = resources.files("fakerun").joinpath("data", "tensors.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def table(model: Model) -> dict[str, Any]:
    """The model's table: its variant's (Falcon-40B's new decoder), else its
    architecture's; an architecture without a table of its own is laid out
    as Llama's (the most common layout)."""
    tables = _tables()
    name = tables["variant"].get(model.name, model.arch)
    found = tables.get(name, tables["LlamaForCausalLM"])
    return {**tables[found["like"]], **found} if "like" in found else found


@dataclass(frozen=True)
class Layout:
    """What save_pretrained writes of a model: its tensors, and the sizes
    its config.json states."""

    tensors: tuple[Tensor, ...]
    model_type: str
    intermediate: int
    tied: bool


def layout(model: Model, dtype: str = DTYPE) -> Layout:
    """The tensors in the order the model registers them, in `dtype`."""
    spec = table(model)
    intermediate, tied = solve(model, spec)
    tensors = _tensors(spec, _sizes(model, spec, intermediate), tied)
    typed = tuple(dataclasses.replace(t, dtype=dtype) for t in tensors)
    return Layout(typed, spec["model_type"], intermediate, tied)


def solve(model: Model, spec: dict[str, Any]) -> tuple[int, bool]:
    """(intermediate size, tied embeddings) that make the catalog's
    parameter count: the count is linear in the intermediate size. Of the
    whole solutions (with an lm_head, or tied without one) the one a multiple
    of 128 wins, as every published size in the catalog is (Llama-3.2-1B's
    untied 5520 against its real tied 8192). Where none is whole (a table
    that does not quite fit the model, or a catalog count a little off), the
    nearest untied size that is a multiple of 128."""
    whole, nearest = [], 0
    for tied in (False, True):
        fixed = _count(spec, _sizes(model, spec, 0), tied)
        per = _count(spec, _sizes(model, spec, 1), tied) - fixed
        size, rest = divmod(model.params - fixed, per)
        if rest == 0 and size > 0:
            whole.append((size % ALIGN != 0, size, tied))
        if not tied:
            nearest = max(ALIGN, round((model.params - fixed) / per / ALIGN) * ALIGN)
    return min(whole)[1:] if whole else (nearest, False)


def _sizes(model: Model, spec: dict[str, Any], intermediate: int) -> dict[str, int]:
    head_dim = _tables()["head_dim"].get(model.name, model.hidden // model.heads)
    return {"h": model.hidden, "i": intermediate, "v": model.vocab, "c": model.context,
            "q": model.heads * head_dim, "kv": model.kv_heads * head_dim, "e": spec.get("experts", 1),
            "n": model.layers}


def _count(spec: dict[str, Any], sizes: dict[str, int], tied: bool) -> int:
    return sum(math.prod(t.shape) for t in _tensors(spec, sizes, tied))


def _tensors(spec: dict[str, Any], sizes: dict[str, int], tied: bool) -> list[Tensor]:
    out = [_tensor(row, "", sizes) for row in spec["head"]]
    for n in range(sizes["n"]):
        prefix = spec["prefix"].format(n=n)
        for row in spec["layer"]:
            experts = range(sizes["e"]) if "{e}" in row[0] else range(1)
            out += [_tensor([row[0].format(e=e), *row[1:]], prefix, sizes) for e in experts]
    out += [_tensor(row, "", sizes) for row in spec["tail"]]
    if not tied:
        out += [_tensor(row, "", sizes) for row in spec["untied"]]
    return out


def _tensor(row: list[str], prefix: str, sizes: dict[str, int]) -> Tensor:
    return Tensor(prefix + row[0], tuple(_dim(d, sizes) for d in row[1:]))


def _dim(text: str, sizes: dict[str, int]) -> int:
    """"q+2*kv" in `sizes`; a term that is a number is that number ("c+2")."""
    total = 0
    for term in text.split("+"):
        factor, _, name = term.rpartition("*")
        total += (int(factor) if factor else 1) * (int(name) if name.isdigit() else sizes[name])
    return total


# save_pretrained's default max_shard_size, by transformers' major version:
# "5GB" in 4.x (modeling_utils.py at v4.42.4, v4.44.2, v4.46.3), "50GB" in 5.x
# (modeling_utils.py at v5.0.0); huggingface_hub's parse_size_to_int reads
# "GB" as 10**9.
MAX_SHARD = {4: ("5GB", 5 * 10**9), 5: ("50GB", 50 * 10**9)}
SINGLE = "model.safetensors"


def max_shard(transformers: str) -> tuple[str, int]:
    """(as the log line says it, in bytes) for the pinned transformers."""
    major = int(transformers.split(".")[0])
    return MAX_SHARD[min(max(major, min(MAX_SHARD)), max(MAX_SHARD))]


def split(tensors: tuple[Tensor, ...], max_bytes: int) -> list[tuple[str, tuple[Tensor, ...]]]:
    """huggingface_hub's split_state_dict_into_shards_factory (serialization/
    _base.py): tensors in state-dict order fill a shard until the next would
    pass `max_bytes`; a tensor larger than that gets a shard of its own. One
    shard is `model.safetensors`; more are model-0000k-of-0000n.safetensors."""
    groups: list[list[Tensor]] = []
    current: list[Tensor] = []
    size = 0
    for t in tensors:
        if t.nbytes > max_bytes:
            groups.append([t])
            continue
        if current and size + t.nbytes > max_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.nbytes
    if current:
        groups.append(current)
    if len(groups) == 1:
        return [(SINGLE, tuple(groups[0]))]
    n = len(groups)
    return [(f"model-{k:05d}-of-{n:05d}.safetensors", tuple(g)) for k, g in enumerate(groups, 1)]


# Bounded: a --loop's agent draws a model each run, and a run's arguments may describe one
# of their own (a fine-tune's name on a catalog shape); the catalog has ~100.
@functools.lru_cache(maxsize=256)
def shard_count(model: Model, transformers: str) -> int:
    """How many weight files save_pretrained writes of `model` (the dtype
    does not matter: bf16 and fp16 are both 2 bytes)."""
    return len(split(layout(model).tensors, max_shard(transformers)[1]))


INDEX = "model.safetensors.index.json"
CONFIG, GENERATION_CONFIG = "config.json", "generation_config.json"
TRAINING_ARGS = "training_args.bin"  # transformers' TRAINING_ARGS_NAME
DEEPSPEED_EXPORT = "pytorch_model.bin"  # DeepSpeed's save_16bit_model's save_filename default
# What each style's script writes at its end (the Export event's files; its
# checkpoint writer writes these names, read from here): save_pretrained's for
# the Trainer and the seeds' script (which has no generation config),
# DeepSpeed's save_16bit_model's one file; Megatron's pretrain_gpt.py and a
# Lightning fit() write nothing beyond their checkpoints.
EXPORTS = {"hf": (CONFIG, GENERATION_CONFIG), "torchrun": (CONFIG,), "deepspeed": (DEEPSPEED_EXPORT,)}


def weight_files(model: Model, transformers: str) -> list[str]:
    """The weights' files save_pretrained writes: one, or the shards and their index."""
    n = shard_count(model, transformers)
    shards = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    return [SINGLE] if n == 1 else [*shards, INDEX]


def export_files(model: Model, transformers: str, style: str, training_args: bool = False) -> list[str]:
    """The files the style's script writes at its end, by name, in the order
    written. The Trainer's save_model (`_save`, trainer.py at v4.42.4 to
    v5.0.0) then saves the model's tokenizer (world/tokenizers.py) and
    `training_args.bin` (`training_args`: whether this launch line's is written)."""
    if style not in EXPORTS:
        return []
    if style == "deepspeed":
        return list(EXPORTS[style])
    files = [*EXPORTS[style], *weight_files(model, transformers)]
    if style != "hf":
        return files
    config = tokenizers.for_model(model.name)
    saved = tokenizers.saved(config, transformers) if config is not None else ()
    return [*files, *saved, *((TRAINING_ARGS,) if training_args else ())]
