"""checkpoint/fsdp.py's pieces against their sources: accelerate's
state_dict_type from the environment (utils/dataclasses.py at v1.1.1), the
param groups of torch's AdamW per pin (optim/adamw.py at 2.5.1, adam.py at
2.9.1; transformers 5.0.0's adamw_torch_fused default), FSDP's dim-0 chunks
(_ext_chunk_tensor) and dedup_save_plans' placing of replicated items."""

from __future__ import annotations

import dataclasses

import pytest

from fakerun.checkpoint import distcp, fsdp, model_files
from fakerun.config.strategy_args import fsdp_state_dict
from fakerun.errors import UsageError
from fakerun.world import styles
from fakerun.world.identity import build


@pytest.mark.parametrize(("given", "kind"), [(None, "FULL_STATE_DICT"), ("", "FULL_STATE_DICT"),
                                             ("1", "FULL_STATE_DICT"), ("sharded_state_dict", "SHARDED_STATE_DICT"),
                                             ("3", "SHARDED_STATE_DICT")])
def test_the_state_dict_type_is_the_environments(given, kind):
    assert fsdp_state_dict(given) == kind


@pytest.mark.parametrize("given", ["LOCAL_STATE_DICT", "2", "full"])
def test_a_state_dict_type_not_simulated_or_unknown_is_one_usage_line(given):
    with pytest.raises(UsageError, match="FSDP_STATE_DICT_TYPE"):
        fsdp_state_dict(given)


def ident_of(style: str):
    return build(6, 1, 2, model="Qwen2.5-0.5B", versions=styles.parse(style).versions()[0])


def test_param_groups_follow_each_pinned_torchs_adamw():
    old = model_files.param_groups(ident_of("hf"), 1e-5, [[0], [1]], model_files.AdamW(weight_decay=0.1))
    new = model_files.param_groups(ident_of("hf@5"), 1e-5, [[0], [1]], model_files.AdamW())
    assert list(old[0]) == ["weight_decay", "lr", "betas", "eps", "amsgrad", "foreach", "maximize", "capturable",
                            "differentiable", "fused", "initial_lr", "params"]
    assert list(new[1]) == ["weight_decay", "lr", "betas", "eps", "amsgrad", "maximize", "foreach", "capturable",
                            "differentiable", "fused", "decoupled_weight_decay", "initial_lr", "params"]
    assert (old[0]["weight_decay"], old[1]["weight_decay"], old[0]["fused"], new[0]["fused"]) == (0.1, 0.0, None, True)
    assert old[0]["betas"] is old[1]["betas"]  # the defaults' one tuple: a BINGET in the pickle


def files(world: int, kind: str = fsdp.SHARDED) -> fsdp.FsdpFiles:
    ident = dataclasses.replace(build(6, 1, world, model="Qwen2.5-0.5B"), nproc=world)
    return fsdp.FsdpFiles(model_files.ModelFiles(ident), 6, model_files.AdamW(), kind)


def test_parameters_are_chunked_along_dim_0_the_last_rank_short():
    chunks = files(2)._chunks((5, 3))
    assert [(c.offsets, c.sizes, c.writer) for c in chunks] == [((0, 0), (3, 3), 0), ((3, 0), (2, 3), 1)]


def test_replicated_items_go_to_the_least_planned_rank_in_plan_order():
    """Rank 0's plan first: a step before any shard ties everywhere (the lowest
    rank takes it); after rank 0's shard of a tensor the others are emptier;
    a bytes item counts 1, a 0-dim float32 4 (planned: 8, 4, 4, 1, then 5)."""
    sharded = distcp.Sharded("w", (4, 2), "bfloat16", tuple(distcp.Chunk((r, 0), (1, 2), r) for r in range(4)))
    step = distcp.Sharded("s", (), "float32", ())
    items = [step, sharded, dataclasses.replace(step, key="t"), dataclasses.replace(step, key="u"),
             distcp.Sharded("groups", (), None, (), 100), dataclasses.replace(step, key="v")]
    placed = fsdp._deduplicated(items, 4)
    assert [s.chunks[0].writer for s in placed if s.key != "w"] == [0, 1, 2, 3, 3]
