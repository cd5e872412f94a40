"""What the training script itself prints (rank 0's stdout): the phases
laid out as in the seeds: init banner, model/tokenizer/dataset, step blocks,
the GPU cluster grid, NCCL stats, validation, checkpoint, export, summary.
Every figure comes from an event; nothing is drawn here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from fakerun import events as ev
from fakerun.render.lines import STDOUT, Line, stamp
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world.physics import safe_exp

BAR = "━"
RULE = "=" * 40
TOKENIZERS = {"LlamaForCausalLM": "PreTrainedTokenizerFast", "MistralForCausalLM": "LlamaTokenizerFast",
              "MixtralForCausalLM": "LlamaTokenizerFast", "Qwen2ForCausalLM": "Qwen2TokenizerFast",
              "Gemma2ForCausalLM": "GemmaTokenizerFast", "GPT2LMHeadModel": "GPT2TokenizerFast",
              # tokenizer_config.json's tokenizer_class, as AutoTokenizer loads it (fast where there is one)
              "GemmaForCausalLM": "GemmaTokenizerFast", "GPTNeoXForCausalLM": "GPTNeoXTokenizerFast",
              "StableLmForCausalLM": "GPTNeoXTokenizerFast", "OlmoForCausalLM": "GPTNeoXTokenizerFast",
              "PhiForCausalLM": "CodeGenTokenizerFast", "BloomForCausalLM": "BloomTokenizerFast",
              "OPTForCausalLM": "GPT2TokenizerFast", "GPTJForCausalLM": "GPT2TokenizerFast",
              "GPTNeoForCausalLM": "GPT2TokenizerFast", "InternLM2ForCausalLM": "InternLM2TokenizerFast",
              "BaichuanForCausalLM": "BaichuanTokenizer", "ChatGLMModel": "ChatGLMTokenizer"}
OPS = {"all_reduce": "AllReduce", "broadcast": "Broadcast", "barrier": "Barrier"}


class PytorchLines(EventRoutes):
    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.width = width
        self.tz = tz
        self.busbw = 0.0
        self._handlers: dict[type, Callable[[Any], list[str]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.GpuStatus: self._grid,
            ev.NcclStats: self._nccl, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Export: self._export, ev.Summary: self._summary,
        }

    def lines(self, event: ev.Event) -> list[Line]:
        return [Line(text, STDOUT, 0) for text in self.routed(event) or []]

    def banner(self, when: float) -> list[Line]:
        i = self.ident
        v = i.versions
        ts = stamp(when, self.tz)
        texts = [RULE, "LLM Training Session Starting", RULE,
                 f"Framework: PyTorch {v.torch} + transformers {v.transformers}",
                 f"Parallelism: {_layout(i)} | {i.gpu.precision} mixed precision",
                 f"NCCL: {v.nccl} | CUDA: {v.cuda} | cuDNN: {v.cudnn} | Driver: {v.driver}",
                 "", "Initializing distributed environment..."]
        return [Line(f"{ts} {t}".rstrip(), STDOUT, 0) for t in texts]

    # -- phases -------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[str]:
        i, ts = self.ident, stamp(e.time, self.tz)
        p, h = i.parallel, i.hyper
        texts: dict[str, list[str]] = {
            "nccl": [f"  World size: {_world(i)} ({i.gpu.name})",
                     f"  Master: {i.hosts[0]}:{self.master_port}", "  Backend: nccl", ""],
            "model": [f"Loading model: {i.model.name}", f"  Architecture: {i.model.arch} "
                      f"({i.model.layers} layers, hidden {i.model.hidden}, {i.model.heads} heads)",
                      f"  Parameters: {_params(i.model.params)} "
                      f"({i.gpu.precision}: {_gb(2 * i.model.params)})",
                      *([f"  Sharding: {_sharding(p)}"] if i.world > 1 else []), ""],  # one GPU: none
            "tokenizer": [f"Loading tokenizer: {TOKENIZERS.get(i.model.arch, 'PreTrainedTokenizerFast')}",
                          f"  Vocab size: {i.model.vocab:,} | Max length: {i.model.context:,}", ""],
            "dataset": [f"Dataset: {i.dataset.name} ({_tokens(i.dataset.tokens)} tokens)",
                        f"  Training samples: {h.total_steps * h.global_batch:,} "
                        f"({_tokens(h.total_steps * h.tokens_per_step)} tokens this run)",
                        f"  Global batch: {h.global_batch} x {h.seq_len:,} tokens = {h.tokens_per_step:,} "
                        f"tokens/step (micro batch {h.micro_batch}, grad accum {h.grad_accum})", ""],
        }
        if e.name == "init":
            return [f"{ts} {t}".rstrip() for t in texts.get(e.stage, [])]
        return self._phase_header(e, ts)

    def _phase_header(self, e: ev.Phase, ts: str) -> list[str]:
        h = self.ident.hyper
        if e.name == "train":
            return [f"{ts} Starting training: {h.total_steps:,} steps, {_plural(h.epochs, 'epoch')}, "
                    f"warmup {_plural(h.warmup_steps, 'step')}, peak LR {h.max_lr:.2e}"]
        if e.name == "validation":
            if e.step % h.steps_per_epoch and e.step != h.total_steps:  # stopped by --exit-after-time
                return [f"{ts} [Validation] Training stopped at step {e.step}, "
                        "evaluating on validation set..."]
            return [f"{ts} [Validation] Epoch {self._epoch(e.step)} complete, "
                    "evaluating on validation set..."]
        if e.name == "checkpoint":
            return [f"{ts} [Checkpoint] Saving model checkpoint "
                    f"(epoch {self._epoch(e.step)}, step {e.step})..."]
        if e.name == "export":
            early = e.step < h.total_steps  # --exit-after-time or a stop ended training
            done = f"stopped early at step {e.step}/{h.total_steps}." if early else "complete!"
            return [f"{ts} [Export] Training {done} Finalizing model...", *_consolidating(self.ident)]
        return []

    def _epoch(self, step: int) -> int:
        h = self.ident.hyper
        return min(h.epochs, max(0, step - 1) // h.steps_per_epoch + 1)

    # -- training -----------------------------------------------------------
    def _step(self, e: ev.Step) -> list[str]:
        h = self.ident.hyper
        if e.step != 1 and e.step % h.log_every and e.step != e.max_steps and not e.stopped:
            return []
        start = (e.epoch - 1) * h.steps_per_epoch
        in_epoch = min(h.steps_per_epoch, e.max_steps - start)
        pct = (e.step - start) / in_epoch
        loss = round(e.loss, 4)
        return [
            f"{stamp(e.time, self.tz)} Epoch {e.epoch}/{h.epochs} {self._bar(pct)} {pct:4.0%} "
            f"| Step {e.step}/{e.max_steps}",
            *self._fit([f"Loss: {loss:.4f}", f"PPL: {safe_exp(loss):.2f}", f"LR: {e.lr:.2e}",
                        f"Grad Norm: {e.grad_norm:.3f}"]),
            *self._fit([f"Throughput: {e.tokens_per_s:,.0f} tok/s", f"{e.samples_per_s:,.1f} samples/s",
                        f"MFU: {e.mfu:.1%}", f"Step: {e.step_time_s:.2f}s", f"ETA: {duration(e.eta_s)}"]),
            *self._fit([f"GPU Mem: {e.gpu_mem_mib / 1024:.1f}/{e.gpu_mem_total_mib / 1024:.1f} GB "
                        f"({e.gpu_mem_mib / max(1, e.gpu_mem_total_mib):.1%})", f"Util: {e.gpu_util:.0f}%",
                        f"Temp: {e.gpu_temp_c:.0f}°C (avg)"]),
        ]

    def _fit(self, parts: list[str], indent: str = "  ", head: str = "") -> list[str]:
        """Join `parts` with " | " into as few lines as fit the width."""
        lines, current = [], ""
        for part in parts:
            candidate = f"{current} | {part}" if current else part
            if current and len(indent) + len(head) + len(candidate) > self.width:
                lines.append(current)
                candidate = part
            current = candidate
        lines.append(current)
        return [f"{indent}{head}{line}" for line in lines]

    def _bar(self, fraction: float) -> str:
        width = 40 if self.width >= 110 else 20
        return BAR * round(width * fraction) + " " * (width - round(width * fraction))

    def _grid(self, e: ev.GpuStatus) -> list[str]:
        inner = self.width - 4
        nodes: dict[int, list[ev.GpuSample]] = {}
        for g in e.gpus:
            nodes.setdefault(g.node, []).append(g)
        label_w = max(len(_node_label(n, gs)) for n, gs in nodes.items())
        per_row = max(1, (inner - label_w - 1 + 3) // (len("100% 85°C") + 3))
        rows = []
        for node, gpus in sorted(nodes.items()):
            cells = [f"{g.util:3d}% {g.temp_c}°C" for g in gpus]
            for k in range(0, len(cells), per_row):
                label = _node_label(node, gpus) if k == 0 else ""
                rows.append(f"{label:<{label_w}} " + " | ".join(cells[k:k + per_row]))
        power = sum(g.power_w for g in e.gpus) / 1000
        rows.append(" | ".join([f"Power: {power:.1f} kW", *self._links()]))
        width = min(inner, max(len(r) for r in rows))
        title = "─ GPU Cluster Status " if self.ident.world > 1 else "─ GPU Status "
        return ([f"┌{title}{'─' * (width + 2 - len(title))}┐"]
                + [f"│ {r[:width]:<{width}} │" for r in rows] + [f"└{'─' * (width + 2)}┘"])

    def _links(self) -> list[str]:
        """The measured all-reduce bus bandwidth under the link that limits it:
        NVLink on one node; across nodes the network, while NVLink inside
        each node keeps its own figure. One GPU has no link in use (nor any
        bus bandwidth)."""
        i = self.ident
        if i.world == 1:
            return []
        nvlink = i.gpu.nvlink == "yes"
        if i.nnodes == 1:
            return [f"NVLink: {self.busbw:,.0f} GB/s bus" if nvlink else i.gpu.host_link]
        inside = f"NVLink: {sim.nvlink_busbw(i.gpu) / 1e9:,.0f} GB/s bus" if nvlink else i.gpu.host_link
        return [inside, f"{sim.network(i).label}, {self.busbw:,.0f} GB/s bus"]

    def _nccl(self, e: ev.NcclStats) -> list[str]:
        parts = []
        for op in e.ops:
            size = f" ({_gb(op.bytes / op.count)})" if op.op == "all_reduce" else ""
            parts.append(f"{OPS.get(op.op, op.op)}: {op.avg_ms:.2f}ms{size}")
            if op.op == "all_reduce":
                self.busbw = op.busbw_gbs
        calls = ", ".join(f"{op.count} {op.op}" for op in e.ops)
        return [*self._fit(parts, "", "[NCCL] "),
                *self._fit([f"Calls since last report: {calls}", f"Bus bandwidth: {self.busbw:,.1f} GB/s"],
                           "", "[NCCL] ")]

    # -- validation, checkpoint, export, summary ----------------------------
    def _validation(self, e: ev.Validation) -> list[str]:
        b = self.ident.hyper.eval_batches
        val = round(e.val_loss, 4)
        return [f"  Evaluating: {self._bar(1.0)} 100% | {b}/{b} batches",
                f"  Val Loss: {val:.4f} | Val PPL: {safe_exp(val):.2f}",
                f"  Eval time: {e.eval_time_s:.1f}s | {e.samples / max(e.eval_time_s, 1e-9):,.0f} samples/s"]

    def _checkpoint(self, e: ev.Checkpoint) -> list[str]:
        return [f"  Saving model shards: {self._bar(1.0)} 100% | {e.shards}/{e.shards}",
                f"  Model weights: {_gb(e.model_bytes)} | Optimizer state: {_gb(e.optimizer_bytes)}",
                f"  Path: {e.path}", f"  Checkpoint saved in {e.seconds:.1f}s"]

    def _export(self, e: ev.Export) -> list[str]:
        # Where it went is the summary's last row (as in the seeds), said once.
        shards = [f for f in e.files if f.endswith(".safetensors")]
        return [f"  Exporting to SafeTensors format: {len(shards)} file{'s' if len(shards) > 1 else ''}, "
                f"{_gb(e.bytes)}"]

    def _summary(self, e: ev.Summary) -> list[str]:
        loss = round(e.final_loss, 4)
        rows = ["", RULE, "Training Summary", RULE, f"Model: {e.model}", f"Total epochs: {e.epochs}",
                f"Total steps: {e.steps:,}", f"Tokens: {_tokens(e.tokens)}", f"Final loss: {loss:.4f}",
                f"Final PPL: {safe_exp(loss):.2f}", f"Best val loss: {e.best_val_loss:.4f}",
                f"Training time: {duration(e.train_time_s)}",
                f"Avg throughput: {e.avg_tokens_per_s:,.0f} tok/s", f"Output: {e.output}", RULE]
        return [f"  {r}".rstrip() for r in rows]


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _node_label(node: int, gpus: list[ev.GpuSample]) -> str:
    first, last = gpus[0].rank, gpus[-1].rank
    return f"Node {node} [GPU {first}-{last}]:" if last > first else f"Node {node} [GPU {first}]:"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def _tokens(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:,.0f}"


def _world(i: Any) -> str:
    if i.world == 1:
        return "1 GPU on 1 node"
    return f"{i.world} GPUs across {_plural(i.nnodes, 'node')}"


def _layout(i: Any) -> str:
    """The banner's parallelism: ZeRO only where it shards, over data-parallel ranks."""
    p = i.parallel
    if i.world == 1:
        return "single GPU"
    return f"DP={p.dp} x TP={p.tp} x PP={p.pp}" + (f" | ZeRO stage {p.zero}" if p.dp > 1 else "")


def _consolidating(i: Any) -> list[str]:
    """Gathering the shards before the export; a single GPU holds the whole model already."""
    if i.world == 1:
        return []
    what = f"ZeRO-{i.parallel.zero}" if i.parallel.dp > 1 else "model-parallel"
    return [f"  Consolidating {what} shards into {i.gpu.precision} weights..."]


def _sharding(p: Any) -> str:
    what = {1: "optimizer states", 2: "optimizer states + gradients", 3: "parameters, gradients + optimizer"}
    parts = [f"{p.dp}-way data parallel (ZeRO-{p.zero}: {what[p.zero]} sharded)"] if p.dp > 1 else []
    if p.tp > 1:
        parts.append(f"{p.tp}-way tensor parallel")
    if p.pp > 1:
        parts.append(f"{p.pp}-stage pipeline")
    return ", ".join(parts)
