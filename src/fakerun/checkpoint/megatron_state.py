"""The sharded state dict a Megatron GPT model saves in the torch_dist
format: megatron.core's GPTModel with the Transformer Engine layer spec
(gpt_layer_specs.py; TransformerLayer.sharded_state_dict stacks each
layer's tensor along a prepended layer axis, `decoder.layers.<module>`),
tensor-parallel tensors split along their partition axis (column-parallel
linear_qkv and linear_fc1 on their output, row-parallel linear_proj and
linear_fc2 on their input, the embedding and output layer on the
vocabulary), the rest replicated; the optimizer's fp32 copy and Adam's
moments under `optimizer.state.<kind>.<key>` (Float16OptimizerWithFloat16Params
and DistributedOptimizer's sharded_state_dict); and the ShardedObjects
`rng_state` (checkpointing.get_rng_state) and, from core 0.10,
`rerun_state_machine_state`, one per (pipeline, tensor) rank.

Who writes each piece: its (tensor, pipeline) group, ranks laid out in
Megatron's order (tp-cp-ep-dp-pp, world/allocator.py stage_of), the pieces
spread over the group's data-parallel ranks, largest first to the least
loaded (--ckpt-fully-parallel-save's distribute_shards_to_ranks); a
replicated tensor by tensor-parallel rank 0's group. Left out: Transformer
Engine's `_extra_state` objects and MoE experts' own keys (a mixture of
experts is laid out as its dense twin)."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.checkpoint.distcp import Chunk, Sharded, chunk_bytes
from fakerun.world.identity import Identity
from fakerun.world.megatron import CheckpointFormat
from fakerun.world.megatron_shapes import Shapes, style_data

OPTIMIZER_STATES = ("fp32_param", "exp_avg", "exp_avg_sq")
# A pickled ShardedObject's bytes (torch.save of Python's, NumPy's, torch's
# and CUDA's RNG states; the rerun state machine's small dict): estimates.
RNG_BYTES, RERUN_BYTES = 14_000, 1_500


@dataclass(frozen=True)
class _Tensor:
    key: str
    dims: tuple[int, ...]
    split: int | None  # the tensor-parallel axis (None: replicated)
    layered: bool = True  # one per layer, stacked along a prepended axis
    stage: str = "layers"  # "first", "last": the pipeline stage holding an unlayered one


def megatron_tensors(ident: Identity, fmt: CheckpointFormat, minor: int) -> list[Sharded]:
    """The state's keys in the order the model registers them (less the
    optimizer's under --no-save-optim, and the RNG's under --no-save-rng)."""
    shapes = Shapes.of(ident, style_data())
    dtype = "bfloat16" if ident.gpu.bf16 else "float16"
    out = []
    for t in _model(shapes):
        chunks = tuple(_chunks(t, ident, shapes))
        out.append(Sharded(t.key, _global(t, shapes), dtype, chunks))
    if fmt.save_optim:
        out += [Sharded(f"optimizer.state.{kind}.{s.key}", s.shape, "float32", s.chunks)
                for s in list(out) for kind in OPTIMIZER_STATES]
    objects = [("rng_state", RNG_BYTES)] if fmt.save_rng else []
    if minor >= 10:
        objects.append(("rerun_state_machine_state", RERUN_BYTES))
    p = ident.parallel
    for name, size in objects:
        for stage in range(p.pp):
            for t in range(p.tp):
                key = f"{name}/shard_{stage}.{t}_{p.pp}.{p.tp}"
                out.append(Sharded(key, (), None, (Chunk((), (), _rank(ident, t, stage, 0)),), size))
    return _spread(out, ident)


def _model(s: Shapes) -> list[_Tensor]:
    m = s.model
    h, kv_channels = m.hidden, m.hidden // m.heads
    qkv = m.heads * kv_channels + 2 * m.kv_heads * kv_channels
    fc1 = s.ffn * (2 if s.swiglu else 1)
    norm = ("layer_norm_weight", "layer_norm_bias") if s.layernorm else ("layer_norm_weight",)
    bias = s.linear_bias
    out = [_Tensor("embedding.word_embeddings.weight", (s.padded_vocab, h), 0, False, "first")]
    if s.learned_positions:
        out.append(_Tensor("embedding.position_embeddings.weight", (s.seq_len, h), None, False, "first"))
    attention, mlp = "decoder.layers.self_attention", "decoder.layers.mlp"
    out += [_Tensor(f"{attention}.linear_qkv.{n}", (h,), None) for n in norm]
    out.append(_Tensor(f"{attention}.linear_qkv.weight", (qkv, h), 0))
    if bias or s.qkv_bias:
        out.append(_Tensor(f"{attention}.linear_qkv.bias", (qkv,), 0))
    out.append(_Tensor(f"{attention}.linear_proj.weight", (h, m.heads * kv_channels), 1))
    if bias:
        out.append(_Tensor(f"{attention}.linear_proj.bias", (h,), None))
    out += [_Tensor(f"{mlp}.linear_fc1.{n}", (h,), None) for n in norm]
    out.append(_Tensor(f"{mlp}.linear_fc1.weight", (fc1, h), 0))
    if bias:
        out.append(_Tensor(f"{mlp}.linear_fc1.bias", (fc1,), 0))
    out.append(_Tensor(f"{mlp}.linear_fc2.weight", (h, s.ffn), 1))
    if bias:
        out.append(_Tensor(f"{mlp}.linear_fc2.bias", (h,), None))
    final = ("weight", "bias") if s.layernorm else ("weight",)
    out += [_Tensor(f"decoder.final_layernorm.{n}", (h,), None, False, "last") for n in final]
    if not s.tied:
        out.append(_Tensor("output_layer.weight", (s.padded_vocab, h), 0, False, "last"))
    return out


def _global(t: _Tensor, s: Shapes) -> tuple[int, ...]:
    return ((s.model.layers,) if t.layered else ()) + t.dims


def _chunks(t: _Tensor, ident: Identity, s: Shapes) -> list[Chunk]:
    """A chunk per (layer, tensor-parallel rank) of the stages holding it."""
    p = ident.parallel
    ranks = range(p.tp) if t.split is not None else range(1)
    out = []
    for stage in _stages(t, p.pp):
        first = sum(s.layers_on(k) for k in range(stage))
        layers = range(first, first + s.layers_on(stage)) if t.layered else [None]
        for layer in layers:
            for tp in ranks:
                offsets, sizes = [0] * len(t.dims), list(t.dims)
                if t.split is not None:
                    sizes[t.split] //= p.tp
                    offsets[t.split] = tp * sizes[t.split]
                at, size = ((layer,), (1,)) if layer is not None else ((), ())
                out.append(Chunk(at + tuple(offsets), size + tuple(sizes), _rank(ident, tp, stage, 0)))
    return out


def _stages(t: _Tensor, pp: int) -> range:
    return {"layers": range(pp), "first": range(1), "last": range(pp - 1, pp)}[t.stage]


def _rank(ident: Identity, tp: int, stage: int, dp: int) -> int:
    p = ident.parallel
    return stage * p.tp * p.dp + dp * p.tp + tp


def _spread(tensors: list[Sharded], ident: Identity) -> list[Sharded]:
    """Each group's pieces over its data-parallel ranks: largest first, to the
    least loaded rank (ties to the lowest)."""
    p = ident.parallel
    load: dict[int, int] = {}
    pieces = sorted(((chunk_bytes(s, c), i, k) for i, s in enumerate(tensors)
                     for k, c in enumerate(s.chunks)), key=lambda x: -x[0])
    moved: dict[tuple[int, int], int] = {}
    for size, i, k in pieces:
        home = tensors[i].chunks[k].writer
        group = [home + d * p.tp for d in range(p.dp)]  # dp 0's rank plus each dp step
        rank = min(group, key=lambda r: (load.get(r, 0), r))
        load[rank] = load.get(rank, 0) + size
        moved[(i, k)] = rank
    return [Sharded(s.key, s.shape, s.dtype, tuple(Chunk(c.offsets, c.sizes, moved[(i, k)])
                                                    for k, c in enumerate(s.chunks)), s.nbytes)
            for i, s in enumerate(tensors)]
