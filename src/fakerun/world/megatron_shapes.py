"""The run's model as Megatron builds it: the padded vocabulary, the layers
and parameters on each (tensor, pipeline) shard, and the theoretical memory
footprint (megatron/training/theoretical_memory_usage.py). Read by the
renderer (its lines) and the checkpoint writer (the tensors it saves).
`data`: data/style-megatron.toml, which says what the catalog does not (the
MLP width, tied embeddings, each architecture's norms and biases)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fakerun.world.catalog import Model, models
from fakerun.world.identity import Identity
from fakerun.world.memory import Parallelism

MIB = 1024 * 1024
VOCAB_DIVISOR = 128  # --make-vocab-size-divisible-by's default


@functools.cache
def style_data() -> dict[str, Any]:
    """data/style-megatron.toml (the renderer reads it through fakerun.texts)."""
    text = resources.files("fakerun").joinpath("data", "style-megatron.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@dataclass(frozen=True)
class Shapes:
    model: Model
    parallel: Parallelism
    seq_len: int
    ffn: int
    tied: bool  # the output layer shares the input embedding
    layernorm: bool  # LayerNorm and a GeLU MLP (else RMSNorm and SwiGLU)
    learned_positions: bool
    qkv_bias: bool
    experts: int = 1  # MLP experts per layer (1: dense)
    topk: int = 1
    linear_bias: bool = False  # every linear layer has a bias (GPT-2 style)
    vocab: int = 0  # the tokenizer's vocabulary before padding (0: the model's)
    micro: int = 1  # --micro-batch-size
    microbatches: int = 1  # per iteration (get_num_microbatches)
    # --sequence-parallel as a Megatron launch line says it (a bare flag, off
    # by default); None: a run fakerun drew, shown as running it with TP.
    sequence_parallel_flag: bool | None = None

    @classmethod
    def of(cls, ident: Identity, data: dict[str, Any]) -> Shapes:
        row = _facts(ident.model, data["models"])
        arch, kind = data["architectures"], ident.model.arch
        layernorm = kind in arch["layernorm_gelu"]
        return cls(ident.model, ident.parallel, ident.hyper.seq_len,
                   row.get("ffn", _default_ffn(ident.model.hidden, not layernorm)),
                   row.get("tied", kind in arch["tied"]), layernorm, kind in arch["learned_positions"],
                   kind in arch["qkv_bias"], row.get("experts", 1), row.get("topk", 1),
                   kind in arch["linear_bias"], arch["gpt2_vocab"] if kind in arch["gpt2_bpe"] else 0,
                   ident.hyper.micro_batch, ident.hyper.grad_accum)

    @property
    def tokenizer(self) -> str:
        return "GPT2BPETokenizer" if self.vocab else "HuggingFaceTokenizer"

    @property
    def tokenizer_vocab(self) -> int:
        return self.vocab or self.model.vocab

    @property
    def swiglu(self) -> bool:
        return not self.layernorm

    @property
    def padded_vocab(self) -> int:
        """tokenizer._vocab_size_with_padding: a multiple of 128 x TP."""
        multiple = VOCAB_DIVISOR * self.parallel.tp
        return -(-self.tokenizer_vocab // multiple) * multiple

    def layers_on(self, stage: int) -> int:
        layers, pp = self.model.layers, self.parallel.pp
        return layers // pp + (1 if stage < layers % pp else 0)

    def shard_params(self, stage: int) -> int:
        """Parameters of one (tensor, pipeline) shard: the linear layers split
        over TP, the norms replicated; the first stage holds the embedding, the
        last the final norm and the output layer (its own copy when untied or
        when it is not on the embedding's stage)."""
        m, tp = self.model, self.parallel.tp
        h, norm = m.hidden, 2 if self.layernorm else 1  # weight, and a bias for LayerNorm
        qkv = h + 2 * m.kv_heads * (h // m.heads)  # output features of the fused QKV projection
        fc1 = self.ffn * (2 if self.swiglu else 1)
        split = h * qkv + h * h + self.experts * (h * fc1 + self.ffn * h)
        replicated = 2 * norm * h + (h * self.experts if self.experts > 1 else 0)  # norms, router
        if self.linear_bias:  # column-parallel biases split, row-parallel ones replicated
            split, replicated = split + qkv + self.experts * fc1, replicated + h + self.experts * h
        elif self.qkv_bias:
            split += qkv
        count = self.layers_on(stage) * (split // tp + replicated)
        embedding = self.padded_vocab * h // tp
        if stage == 0:
            count += embedding + (self.seq_len * h if self.learned_positions else 0)
        if stage == self.parallel.pp - 1:
            count += norm * h + (embedding if not self.tied or self.parallel.pp > 1 else 0)
        return count

    @property
    def sequence_parallel(self) -> bool:
        """validate_args turns sequence parallelism off without tensor parallelism."""
        return self.parallel.tp > 1 and self.sequence_parallel_flag is not False

    def theoretical_memory(self, block: bool) -> list[str]:
        """theoretical_memory_usage.report_theoretical_memory(verbose=True).
        Up to core 0.10 (`block` False) the activations are reported only
        under sequence parallelism with selective recompute, the formulae's
        premise; 0.15 always reports them, without SP by its other formula."""
        m, p = self.model, self.parallel
        h, layers = m.hidden, m.layers
        gated = 3 / 2 if self.swiglu else 1
        transformer = 2 * layers * h * h * ((1 + m.kv_heads / m.heads) + self.ffn / h * self.experts * gated
                                            + 2 / h + 1 / (layers * h))
        embedding = h * self.padded_vocab
        embeddings = embedding if self.tied else 2 * embedding
        most = (transformer / p.pp + embedding) / p.tp
        if not self.tied and p.pp == 1:
            most += embedding / p.tp
        out = [f"Number of parameters in transformer {'block' if block else 'layers'} in billions: "
               f"{transformer / 10**9: .2f}",
               f"Number of parameters in embedding layers in billions: {embeddings / 10**9:.2f}",
               f"Total number of parameters in billions: {(transformer + embeddings) / 10**9:.2f}",
               f"Number of parameters in most loaded shard in billions: {most / 10**9:.4f}"]
        if p.pp > 1:
            other = transformer / (p.pp * p.tp)
            out.append(f"Number of parameters in other shards in billions: {other / 10**9:.4f}")
        # bf16 weights, fp32 main grads, fp32 master and Adam states (sharded over DP when distributed)
        per_param = 6 + 12 / p.dp if p.zero >= 1 else 18
        weights = most * per_param / MIB
        with_sp = self.sequence_parallel and p.recompute == "selective"
        if not (with_sp or block):
            return out + [f"Theoretical memory footprints: weight and optimizer={weights:.2f} MB"]
        if block:
            out.append(f"compute_activation_memory{' with SP' if with_sp else '_without_sp'}")
        said, activation = self._activation(with_sp)
        activation /= MIB
        return out + said + [f"Theoretical memory footprints: weight and optimizer={weights:.2f} MB, "
                             f"activation={activation:.2f} MB, total={weights + activation:.2f} MB", ""]

    def _activation(self, with_sp: bool) -> tuple[list[str], float]:
        """compute_activation_memory (Korthikanti et al. Table 2, for the first
        stage) or, from 0.15, compute_activation_memory_without_sp."""
        m, p = self.model, self.parallel
        tokens = self.seq_len * self.micro
        if with_sp:
            layer = tokens * m.hidden * (18 + 4 * self.ffn / m.hidden)
            said = [f"Activation memory footprint per transformer layer: {layer / MIB / p.tp:.1f} MB"]
        else:
            layer = tokens * m.hidden * (10 + 24 / p.tp)
            said = ["Activation memory footprint per transformer layer (precise, without SP): "
                    f"{layer / MIB:.1f} MB"]
        total = layer * m.layers + 8 * tokens * p.pp + tokens * m.hidden * p.pp
        if p.pp > 1:
            total *= min(1, self.microbatches / p.pp)
            said.append(f"Number of in-flight microbatches: {min(self.microbatches, p.pp)}")
        if with_sp:
            if p.pp == 1:
                total += tokens * m.hidden * 4 * (1 + self.padded_vocab / m.hidden)
            return said, total / p.tp
        if p.pp == 1:
            total += (tokens * self.padded_vocab / p.tp + tokens * m.hidden) * 2
        return said, total * 1.05


def _facts(model: Model, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The model's row, or that of the real model with its exact shape."""
    if model.name in rows:
        return rows[model.name]
    twin = next((m for m in models() if m.name in rows and (m.arch, m.params) == (model.arch, model.params)),
                None)
    return rows[twin.name] if twin else {}


def _default_ffn(hidden: int, swiglu: bool) -> int:
    """arguments.py when --ffn-hidden-size is not given."""
    return int((4 * hidden * 2 / 3) / 64) * 64 if swiglu else 4 * hidden
