"""The catalog's rows are real: every model's parameter count is what its
shape adds up to, joke rows sit on real shapes, names are unique, and each GPU
carries what its part really has."""

from __future__ import annotations

import math
import re

import pytest

from fakerun import texts
from fakerun.world import catalog
from fakerun.world.tensors import Tensor, layout

REAL = [m for m in catalog.models() if m.kind == "real"]
FUNNY = [m for m in catalog.models() if m.kind == "funny"]
# The published configs' intermediate_size and tie_word_embeddings, one row a
# real model (style-megatron.toml's [models], which Megatron's renderer reads).
PUBLISHED = texts.load("style-megatron")["models"]
# OLMo-2-1124-7B's catalog count is 606,208 short of its shape (a row kept as it was).
OFF_BY_DESIGN = {"OLMo-2-1124-7B"}
SIZE = re.compile(r"-(\d+(?:\.\d+)?)B$", re.IGNORECASE)


def numel(tensors: tuple[Tensor, ...]) -> int:
    return sum(math.prod(t.shape) for t in tensors)


@pytest.mark.parametrize("model", [m for m in REAL if m.name not in OFF_BY_DESIGN], ids=lambda m: m.name)
def test_a_real_models_count_is_its_published_shape(model: catalog.Model):
    """Embeddings + layers x (attention + MLP + norms) + head, laid out per
    architecture (data/tensors.toml), with the published MLP width and tying,
    adds up to the catalog's count exactly."""
    row = PUBLISHED[model.name]
    lay = layout(model)
    assert (lay.intermediate, lay.tied) == (row["ffn"], row["tied"])
    assert numel(lay.tensors) == model.params


@pytest.mark.parametrize("model", REAL, ids=lambda m: m.name)
def test_active_parameters_are_all_of_a_dense_model_and_topk_experts_of_a_moe(model: catalog.Model):
    row = PUBLISHED[model.name]
    experts, topk = row.get("experts", 1), row.get("topk", 1)
    idle = model.layers * (experts - topk) * 3 * model.hidden * row["ffn"]  # w1, w2, w3 of the idle experts
    assert model.active_params == model.params - idle


def test_names_are_unique_across_each_table():
    for rows in (catalog.models(), catalog.datasets(), catalog.gpus()):
        names = [r.name.lower() for r in rows]
        assert len(names) == len(set(names))


def shape(m: catalog.Model) -> tuple:
    """Everything but the name, the context a joke may shorten, and the kind."""
    return m.arch, m.params, m.active_params, m.layers, m.hidden, m.heads, m.kv_heads, m.vocab


@pytest.mark.parametrize("joke", FUNNY, ids=lambda m: m.name)
def test_a_joke_model_sits_on_a_real_shape_and_says_its_size(joke: catalog.Model):
    twins = [m for m in REAL if shape(m) == shape(joke)]
    assert twins, f"{joke.name} has no real model of its shape"
    size = SIZE.search(joke.name)
    assert size, f"{joke.name} names no size"
    # As published names round: Llama-3.2-1B is 1.24B, Phi-3-medium 13.96B.
    assert abs(math.log(float(size.group(1)) * 1e9 / joke.params)) < math.log(1.3)
    assert joke.context <= max(t.context for t in twins)


def test_the_catalog_has_the_seeds_variety():
    families = {re.split(r"[-_.\d]", m.name.lower(), maxsplit=1)[0] for m in REAL}
    assert {"llama", "meta", "codellama", "mistral", "mixtral", "falcon", "qwen", "deepseek", "yi", "gemma",
            "phi", "bloom", "opt", "pythia", "gpt", "stablelm", "open", "vicuna", "wizardlm", "solar", "internlm",
            "baichuan", "chatglm", "olmo"} <= families
    assert len(REAL) >= 60 and len(FUNNY) == 15
    assert sum(d.kind == "real" for d in catalog.datasets()) >= 19
    assert sum(d.kind == "funny" for d in catalog.datasets()) == 10
    nvidia = [g for g in catalog.gpus() if g.kind == "real" and g.vendor == "nvidia"]
    assert len(nvidia) == 12


@pytest.mark.parametrize(("name", "precision", "nvls", "link"), [
    ("NVIDIA H100 80GB HBM3", "bf16", True, "PCIe Gen5"),
    ("NVIDIA H100 PCIe", "bf16", False, "PCIe Gen5"),
    ("NVIDIA H100 NVL", "bf16", False, "PCIe Gen5"),
    ("NVIDIA A100-PCIE-40GB", "bf16", False, "PCIe Gen4"),
    ("NVIDIA L4", "bf16", False, "PCIe Gen4"),
    ("Tesla V100-SXM2-32GB", "fp16", False, "PCIe Gen3"),
    ("Tesla V100-PCIE-32GB", "fp16", False, "PCIe Gen3"),
    ("NVIDIA TITAN RTX Cluster Edition", "fp16", False, "PCIe Gen3"),
])
def test_what_a_gpu_computes_in_and_how_it_is_linked(name: str, precision: str, nvls: bool, link: str):
    gpu = catalog.find(catalog.gpus(), name, "GPU")
    assert (gpu.precision, gpu.nvls, gpu.host_link) == (precision, nvls, link)


def test_a_row_may_leave_out_the_trailing_columns_and_no_others():
    row = "NVIDIA X | 1024 | 100 | 10 | 01,02 | no | nvidia | real"
    (gpu,) = catalog.parse(row, catalog.Gpu, "t")
    assert (gpu.architecture, gpu.pcie_gen, gpu.precision, gpu.min_driver) == ("", 4, "bf16", 0)
    with pytest.raises(catalog.CatalogError, match="expected 8 to 11 non-empty"):
        catalog.parse("NVIDIA X | 1024 | 100 | 10 | 01,02 | no | nvidia", catalog.Gpu, "t")
    with pytest.raises(catalog.CatalogError, match="expected 4 non-empty"):
        catalog.parse("x | 1 | pretrain", catalog.Dataset, "t")


def test_a_board_newer_than_a_sets_driver_runs_the_first_driver_that_knows_it():
    """NVIDIA/open-gpu-kernel-modules' README lists the H200 (2335) from R550 on:
    not at 535.161.08 or 535.183.01, whose software sets torch 2.3.1 and 2.4.1 pair with."""
    from fakerun.world import identity
    h200 = next(g for g in catalog.gpus() if g.name == "NVIDIA H200")
    assert h200.min_driver == 550
    seen = set()
    for seed in range(12):
        v = identity.build(seed, 1, 8, 40, gpu=h200.name).versions
        seen.add(v.torch)
        assert (v.driver, v.cuda_driver) == ("550.127.05", 12040)
    assert {"2.3.1", "2.4.1"} <= seen  # the sets whose own driver is 535: torch's wheel runs on the newer one
    h100 = identity.build(3, 1, 8, 40, gpu="NVIDIA H100 80GB HBM3").versions
    assert h100.driver == next(v.driver for v in catalog.versions() if v.torch == h100.torch)
