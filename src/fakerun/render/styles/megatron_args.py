"""The run's model as Megatron sees it: the padded vocabulary, the parameters
on each (tensor, pipeline) shard, the theoretical memory footprint, and the
command-line arguments a pretrain_gpt.py launch of this run would carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakerun.world.catalog import Model, models
from fakerun.world.identity import Hyper, Identity
from fakerun.world.loss_scale import SCALE_POWER
from fakerun.world.memory import Parallelism

MIB = 1024 * 1024
VOCAB_DIVISOR = 128  # --make-vocab-size-divisible-by's default
SEED = 1234  # --seed's default
# An fp16 run's --initial-loss-scale: 2**16, as DeepSpeed's fp16 config starts
# (Megatron's default 2**32 would skip the first dozen iterations).
INITIAL_LOSS_SCALE = 2**SCALE_POWER
DEFAULT_INTERVAL = 1000  # --eval-interval's default
LIST_FLAGS = ("data_path", "train_data_path", "valid_data_path", "test_data_path")


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
        return self.parallel.tp > 1

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


def launch_args(args: list[str]) -> dict[str, Any]:
    """The launch line's flags as argparse leaves them in Megatron's namespace:
    `--foo-bar 3` is foo_bar=3, a bare `--foo` is True, several values (and
    the data paths, nargs='*') a list of strings."""
    values: dict[str, list[str]] = {}
    name = None
    for token in args:
        if token.startswith("--"):
            flag, eq, value = token[2:].partition("=")
            name = flag.replace("-", "_")
            values[name] = [value] if eq else []
        elif name is not None:
            values[name].append(token)
    return {k: _namespace(k, v) for k, v in values.items()}


def _namespace(name: str, values: list[str]) -> Any:
    if name in LIST_FLAGS or len(values) > 1:
        return values
    return _value(values[0]) if values else True


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def interval(hyper: Hyper) -> int:
    """--eval-interval and --save-interval: the run's evaluation interval (a
    fine-tune's epoch); one evaluation at the end keeps Megatron's default
    (or the next power of ten past the end)."""
    if hyper.eval_every < hyper.total_steps:
        return hyper.eval_every
    return max(DEFAULT_INTERVAL, 10 ** len(str(hyper.total_steps)))


def arguments(ident: Identity, shapes: Shapes, every: int, given: dict[str, Any]) -> dict[str, Any]:
    """A realistic subset of the args namespace as _print_args shows it (after
    validate_args has filled in the derived values), with the launch line's
    own flags added; where the run's figures decide a value, they win."""
    tokenizer = {"tokenizer_type": shapes.tokenizer, **(
        {"vocab_file": "/data/gpt2-vocab.json", "merge_file": "/data/gpt2-merges.txt"} if shapes.vocab
        else {"tokenizer_model": f"/checkpoints/hf/{ident.model.name}"})}
    defaults = {**tokenizer, "save": f"checkpoints/{ident.slug}", "split": "99,1,0",
                "data_path": [f"/data/{ident.dataset.name.lower()}_text_document"]}
    return {**defaults, **given, **_derived(ident, shapes, every)}


def _derived(ident: Identity, shapes: Shapes, every: int) -> dict[str, Any]:
    m, p, h, gpu = ident.model, ident.parallel, ident.hyper, ident.gpu
    moe = shapes.experts > 1
    return {"num_experts": shapes.experts if moe else None, "moe_router_topk": shapes.topk if moe else 2,
        # validate_args forces fp32 gradient accumulation for bf16 only
        "accumulate_allreduce_grads_in_fp32": gpu.bf16, "add_qkv_bias": shapes.qkv_bias, "adam_beta1": 0.9,
        "adam_beta2": 0.95, "adam_eps": 1e-08,
        "attention_dropout": 0.0, "bf16": gpu.bf16, "clip_grad": 1.0, "consumed_train_samples": 0,
        "consumed_valid_samples": 0, "context_parallel_size": 1, "data_parallel_size": p.dp,
        "distributed_backend": "nccl",
        "distributed_timeout_minutes": 10, "eval_interval": every, "eval_iters": h.eval_batches,
        "exit_signal_handler": True, "ffn_hidden_size": shapes.ffn, "fp16": not gpu.bf16,
        "global_batch_size": h.global_batch, "group_query_attention": m.kv_heads < m.heads,
        "hidden_dropout": 0.0, "hidden_size": m.hidden, "init_method_std": 0.02,
        "initial_loss_scale": float(INITIAL_LOSS_SCALE if not gpu.bf16 else 2**32),
        "kv_channels": m.hidden // m.heads, "local_rank": 0, "log_interval": h.log_every,
        "log_throughput": True, "lr": h.max_lr, "lr_decay_iters": None, "lr_decay_style": "cosine",
        "lr_warmup_fraction": None, "lr_warmup_init": 0.0, "lr_warmup_iters": h.warmup_steps,
        "make_vocab_size_divisible_by": VOCAB_DIVISOR, "max_position_embeddings": h.seq_len,
        "micro_batch_size": h.micro_batch, "min_lr": h.min_lr,
        "normalization": "LayerNorm" if shapes.layernorm else "RMSNorm",
        "num_attention_heads": m.heads, "num_layers": m.layers, "num_query_groups": m.kv_heads,
        "num_workers": 2, "optimizer": "adam", "overlap_grad_reduce": False, "overlap_param_gather": False,
        "params_dtype": f"torch.{'bfloat16' if gpu.bf16 else 'float16'}",
        "pipeline_model_parallel_size": p.pp,
        "position_embedding_type": "learned_absolute" if shapes.learned_positions else "rope",
        "rank": 0, "save_interval": every, "seed": SEED,
        "recompute_granularity": None if p.recompute == "none" else p.recompute,
        "recompute_method": "uniform" if p.recompute == "full" else None,
        "recompute_num_layers": 1 if p.recompute == "full" else None,
        "seq_length": h.seq_len, "sequence_parallel": shapes.sequence_parallel, "swiglu": shapes.swiglu,
        "tensor_model_parallel_size": p.tp, "train_iters": h.total_steps,
        # Transformer Engine needs compute capability 8.0: Megatron's own layers before Ampere
        "transformer_impl": "transformer_engine" if gpu.ampere_or_later else "local",
        "untie_embeddings_and_output_weights": not shapes.tied,
        "use_distributed_optimizer": p.zero >= 1, "weight_decay": 0.1, "world_size": ident.world,
    }
