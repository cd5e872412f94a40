"""The command-line arguments a pretrain_gpt.py launch of this run would
carry, and its cadences (the model's shapes: world/megatron_shapes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakerun.world.identity import Hyper, Identity
from fakerun.world.loss_scale import SCALE_POWER
from fakerun.world.megatron_shapes import VOCAB_DIVISOR, Shapes

SEED = 1234  # --seed's default
# An fp16 run's --initial-loss-scale: 2**16, as DeepSpeed's fp16 config starts
# (Megatron's default 2**32 would skip the first dozen iterations).
INITIAL_LOSS_SCALE = 2**SCALE_POWER
DEFAULT_INTERVAL = 1000  # --eval-interval's default


def interval(hyper: Hyper) -> int:
    """--eval-interval and --save-interval of a run fakerun drew: its
    evaluation interval (a fine-tune's epoch); one evaluation at the end
    keeps Megatron's default (or the next power of ten past the end)."""
    if hyper.eval_every < hyper.total_steps:
        return hyper.eval_every
    return max(DEFAULT_INTERVAL, 10 ** len(str(hyper.total_steps)))


@dataclass(frozen=True)
class Cadence:
    """--eval-interval (0: never in the loop) and --save-interval (None: no
    periodic save) as the run has them."""

    eval_interval: int
    save_interval: int | None

    @classmethod
    def of(cls, hyper: Hyper, launched: bool) -> Cadence:
        """`launched`: a Megatron launch line, whose own flags (and Megatron's
        defaults) the run's Hyper already follows (config/megatron_schedule.py);
        else a run fakerun drew, shown as the launch line that runs it."""
        if launched:
            return cls(hyper.eval_every, hyper.save_every or None)
        every = interval(hyper)
        return cls(every, every)

    def in_loop_eval(self, step: int) -> bool:
        """train()'s evaluation at this step (else it is pretrain()'s final one)."""
        return self.eval_interval > 0 and step % self.eval_interval == 0

    def in_loop_save(self, step: int) -> bool:
        return bool(self.save_interval) and step % (self.save_interval or 1) == 0


def arguments(ident: Identity, shapes: Shapes, every: Cadence, given: dict[str, Any]) -> dict[str, Any]:
    """A realistic subset of the args namespace as _print_args shows it (after
    validate_args has filled in the derived values), with the launch line's
    own flags added; where the run's figures decide a value, they win."""
    tokenizer = {"tokenizer_type": shapes.tokenizer, **(
        {"vocab_file": "/data/gpt2-vocab.json", "merge_file": "/data/gpt2-merges.txt"} if shapes.vocab
        else {"tokenizer_model": f"/checkpoints/hf/{ident.model.name}"})}
    defaults = {**tokenizer, "save": f"checkpoints/{ident.slug}", "split": "99,1,0",
                "data_path": [f"/data/{ident.dataset.name.lower()}_text_document"],
                "lr_warmup_fraction": None}
    derived = _derived(ident, shapes, every)
    if given.get("lr_warmup_fraction") is not None:  # the fraction sets the warmup; the count keeps its 0
        derived["lr_warmup_iters"] = given.get("lr_warmup_iters", 0)
    return {**defaults, **given, **derived}


def _derived(ident: Identity, shapes: Shapes, every: Cadence) -> dict[str, Any]:
    m, p, h, gpu = ident.model, ident.parallel, ident.hyper, ident.gpu
    moe = shapes.experts > 1
    return {"num_experts": shapes.experts if moe else None, "moe_router_topk": shapes.topk if moe else 2,
        # validate_args forces fp32 gradient accumulation for bf16 only
        "accumulate_allreduce_grads_in_fp32": gpu.bf16, "add_qkv_bias": shapes.qkv_bias, "adam_beta1": 0.9,
        "adam_beta2": 0.95, "adam_eps": 1e-08,
        "attention_dropout": 0.0, "bf16": gpu.bf16, "clip_grad": 1.0, "consumed_train_samples": 0,
        "consumed_valid_samples": 0, "context_parallel_size": 1, "data_parallel_size": p.dp,
        "distributed_backend": "nccl",
        "distributed_timeout_minutes": 10, "eval_interval": every.eval_interval, "eval_iters": h.eval_batches,
        "exit_signal_handler": True, "ffn_hidden_size": shapes.ffn, "fp16": not gpu.bf16,
        "global_batch_size": h.global_batch, "group_query_attention": m.kv_heads < m.heads,
        "hidden_dropout": 0.0, "hidden_size": m.hidden, "init_method_std": 0.02,
        "initial_loss_scale": float(INITIAL_LOSS_SCALE if not gpu.bf16 else 2**32),
        "kv_channels": m.hidden // m.heads, "local_rank": 0, "log_interval": h.log_every,
        "log_throughput": True, "lr": h.max_lr, "lr_decay_iters": h.decay_steps, "lr_decay_style": h.decay,
        "lr_warmup_init": 0.0, "lr_warmup_iters": h.warmup_steps,
        "make_vocab_size_divisible_by": VOCAB_DIVISOR, "max_position_embeddings": h.seq_len,
        "micro_batch_size": h.micro_batch, "min_lr": h.min_lr,
        "normalization": "LayerNorm" if shapes.layernorm else "RMSNorm",
        "num_attention_heads": m.heads, "num_layers": m.layers, "num_query_groups": m.kv_heads,
        "num_workers": 2, "optimizer": "adam", "overlap_grad_reduce": False, "overlap_param_gather": False,
        "params_dtype": f"torch.{'bfloat16' if gpu.bf16 else 'float16'}",
        "pipeline_model_parallel_size": p.pp,
        "position_embedding_type": "learned_absolute" if shapes.learned_positions else "rope",
        "rank": 0, "save_interval": every.save_interval, "seed": SEED,
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
