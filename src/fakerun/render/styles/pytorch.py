"""What the training script itself prints (rank 0's stdout): the phases
laid out as in the seeds: init banner, model/tokenizer/dataset, step blocks,
the GPU cluster grid, NCCL stats, validation, checkpoint, export, summary.
Every figure comes from an event; nothing is drawn here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from fakerun import events as ev
from fakerun.render.lines import STDOUT, Line, cells, fit, stamp
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world.memory import state_bytes
from fakerun.world.nccl_latency import allreduce_latency_us
from fakerun.world.physics import safe_exp

BAR = "━"
BAR_MIN, BAR_MAX = 10, 40  # a bar's cells: the seeds' bars are 30-40 long; a narrow line gets less
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
# The software line of the banner, per GPU vendor: on ROCm the same script
# names RCCL, ROCm, MIOpen and the amdgpu driver (catalog.on_rocm puts them in
# the same fields); the GPUs' own fabric in the cluster box: NVLink, or AMD's xGMI.
STACK = {"nvidia": ("NCCL", "CUDA", "cuDNN", "Driver"), "amd": ("RCCL", "ROCm", "MIOpen", "Driver")}
FABRIC = {"nvidia": "NVLink", "amd": "xGMI"}


@dataclass(frozen=True)
class Row:
    """One line of the script's, as parts it may break between (joined by
    `sep`) when the width is short: a break indents the rest two columns
    more. A plain string is prose: it breaks between words."""

    parts: tuple[str, ...]
    sep: str = " | "


def row(*parts: str, sep: str = " | ") -> Row:
    return Row(parts, sep)


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
        texts: list[str | Row] = [
            RULE, "LLM Training Session Starting", RULE,
            row(f"Framework: PyTorch {v.torch}", f"+ transformers {v.transformers}", sep=" "),
            row(f"Parallelism: {_layout(i)[0]}", *_layout(i)[1:], f"{i.gpu.precision} mixed precision"),
            row(*_stack(v, i.gpu.vendor)),
            "", "Initializing distributed environment..."]
        return [Line(text, STDOUT, 0) for t in texts for text in self._wrap(t, ts)]

    # -- phases -------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[str]:
        i, ts = self.ident, stamp(e.time, self.tz)
        p, h = i.parallel, i.hyper
        texts: dict[str, list[str | Row]] = {
            "nccl": [row(f"  World size: {_world(i)}", f"({i.gpu.name})", sep=" "),
                     f"  Master: {i.hosts[0]}:{self.master_port}", "  Backend: nccl", ""],
            "model": [f"Loading model: {i.model.name}",
                      row(f"  Architecture: {i.model.arch}", f"({i.model.layers} layers, "
                          f"hidden {i.model.hidden}, {i.model.heads} heads)", sep=" "),
                      f"  Parameters: {_params(i.model.params)} "
                      f"({i.gpu.precision}: {_gb(2 * i.model.params)})",
                      *([f"  Sharding: {_sharding(p)}"] if i.world > 1 else []),  # one GPU: none
                      _memory(i), ""],
            "tokenizer": [f"Loading tokenizer: {TOKENIZERS.get(i.model.arch, 'PreTrainedTokenizerFast')}",
                          row(f"  Vocab size: {i.model.vocab:,}", f"Max length: {i.model.context:,}"), ""],
            "dataset": [f"Dataset: {i.dataset.name} ({_tokens(i.dataset.tokens)} tokens)",
                        row(f"  Training samples: {h.steps_per_epoch * h.global_batch:,}",
                            f"({_share(h)} this run)", sep=" "),
                        f"  Validation samples: {sim.eval_samples(i):,}",
                        row(f"  Global batch: {h.global_batch} x {h.seq_len:,} tokens",
                            f"= {h.tokens_per_step:,} tokens/step",
                            f"(micro batch {h.micro_batch}, grad accum {h.grad_accum})", sep=" "), ""],
        }
        if e.name == "init":
            return [text for t in texts.get(e.stage, []) for text in self._wrap(t, ts)]
        header = [text for t in self._phase_header(e) for text in self._wrap(t, ts)]
        return header + (self._merging() if e.name == "export" else [])

    def _phase_header(self, e: ev.Phase) -> list[str | Row]:
        h = self.ident.hyper
        if e.name == "train":
            return [row(f"Starting training: {h.total_steps:,} steps", _plural(h.epochs, 'epoch'),
                        f"warmup {_plural(h.warmup_steps, 'step')}", f"peak LR {h.max_lr:.2e}", sep=", ")]
        if e.name == "validation":
            if not h.evaluates_after(e.step):  # stopped by --exit-after-time
                return [f"[Validation] Training stopped at step {e.step}, "
                        "evaluating on validation set..."]
            if e.step % h.steps_per_epoch and e.step != h.epochs * h.steps_per_epoch:  # an eval interval's
                return [f"[Validation] Step {e.step}/{h.total_steps}, evaluating on validation set..."]
            return [f"[Validation] Epoch {self._epoch(e.step)} complete, "
                    "evaluating on validation set..."]
        if e.name == "checkpoint":
            return [f"[Checkpoint] Saving model checkpoint "
                    f"(epoch {self._epoch(e.step)}, step {e.step})..."]
        if e.name == "export":
            early = e.step < h.total_steps  # --exit-after-time or a stop ended training
            done = f"stopped early at step {e.step}/{h.total_steps}." if early else "complete!"
            return [f"[Export] Training {done} Finalizing model..."]
        return []

    def _wrap(self, text: str | Row, ts: str = "") -> list[str]:
        """One line of the layout, broken to the width: after the timestamp
        `ts` (a logged line), at its own indent, each further line two more."""
        line = text if isinstance(text, Row) else Row((text[:len(text) - len(text.lstrip())], *text.split()),
                                                      " ")
        first = line.parts[0]
        indent = first[:len(first) - len(first.lstrip())]
        lead = f"{ts} " if ts else ""
        parts = [p for p in (first.lstrip(), *line.parts[1:]) if p]
        return fit(parts, self.width, lead + indent, lead + indent + "  ", line.sep)

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
        ts = stamp(e.time, self.tz)
        # The bar keeps one length for the whole run: sized for the widest header it will have.
        widest = cells(f"{ts} Epoch {h.epochs}/{h.epochs}  100% | Step {e.max_steps}/{e.max_steps}")
        rows = [
            row(f"  Loss: {loss:.4f}", f"PPL: {safe_exp(loss):.2f}", f"LR: {e.lr:.2e}",
                f"Grad Norm: {e.grad_norm:.3f}"),
            row(f"  Throughput: {e.tokens_per_s:,.0f} tok/s", f"{e.samples_per_s:,.1f} samples/s",
                f"MFU: {e.mfu:.1%}", f"Step: {e.step_time_s:.2f}s", f"ETA: {duration(e.eta_s)}"),
            row(f"  GPU Mem: {e.gpu_mem_mib / 1024:.1f}/{e.gpu_mem_total_mib / 1024:.1f} GB "
                f"({e.gpu_mem_mib / max(1, e.gpu_mem_total_mib):.1%})", f"Util: {e.gpu_util:.0f}%",
                f"Temp: {e.gpu_temp_c:.0f}°C (avg)"),
        ]
        return [f"{ts} Epoch {e.epoch}/{h.epochs} {self._bar(pct, widest)} {pct:4.0%} "
                f"| Step {e.step}/{e.max_steps}",
                *(text for r in rows for text in self._wrap(r))]

    def _bar(self, fraction: float, used: int) -> str:
        """A progress bar taking what the width leaves beside `used` columns
        of text, BAR_MIN to BAR_MAX cells."""
        width = max(BAR_MIN, min(BAR_MAX, self.width - used))
        done = round(width * fraction)
        return BAR * done + " " * (width - done)

    def _barred(self, head: str, tail: str) -> str:
        """A finished phase's bar line: `head`, a full bar, 100%, `tail`."""
        line = f"{head}{{}} 100%{' ' + tail if tail else ''}"
        return line.format(self._bar(1.0, cells(line) - 2))

    def _grid(self, e: ev.GpuStatus) -> list[str]:
        inner = self.width - 4
        nodes: dict[int, list[ev.GpuSample]] = {}
        for g in e.gpus:
            nodes.setdefault(g.node, []).append(g)
        label_w = max(len(_node_label(n, gs)) for n, gs in nodes.items())
        per_row = max(1, (inner - label_w - 1 + 3) // (len("100% 85°C") + 3))
        rows = []
        for node, gpus in sorted(nodes.items()):
            readings = [f"{g.util:3d}% {g.temp_c}°C" for g in gpus]
            for k in range(0, len(readings), per_row):
                label = _node_label(node, gpus) if k == 0 else ""
                rows.append(f"{label:<{label_w}} " + " | ".join(readings[k:k + per_row]))
        power = sum(g.power_w for g in e.gpus) / 1000
        rows += fit([f"Power: {power:.1f} kW", *self._links()], inner)
        width = min(inner, max(cells(r) for r in rows))
        title = "─ GPU Cluster Status " if self.ident.world > 1 else "─ GPU Status "
        return ([f"┌{title}{'─' * (width + 2 - len(title))}┐"]
                + [f"│ {r}{' ' * (width - cells(r))} │" for r in rows] + [f"└{'─' * (width + 2)}┘"])

    def _links(self) -> list[str]:
        """The measured all-reduce bus bandwidth under the link that limits it:
        NVLink on one node; across nodes the network, while NVLink inside
        each node keeps its own figure. One GPU has no link in use (nor any
        bus bandwidth)."""
        i = self.ident
        if i.world == 1:
            return []
        fabric, nvlink = FABRIC[i.gpu.vendor], i.gpu.nvlink == "yes"
        if i.nnodes == 1:
            return [f"{fabric}: {self.busbw:,.0f} GB/s bus" if nvlink else i.gpu.host_link]
        inside = f"{fabric}: {sim.node_busbw(i) / 1e9:,.0f} GB/s bus" if nvlink else i.gpu.host_link
        return [inside, f"{sim.network(i).label}, {self.busbw:,.0f} GB/s bus"]

    def _nccl(self, e: ev.NcclStats) -> list[str]:
        parts = []
        for op in e.ops:
            size = f" ({_gb(op.bytes / op.count)})" if op.op == "all_reduce" else ""
            parts.append(f"{OPS.get(op.op, op.op)}: {op.avg_ms:.2f}ms{size}")
            if op.op == "all_reduce":
                self.busbw = op.busbw_gbs
        calls = [f"{op.count} {op.op}" for op in e.ops]
        # NCCL's tuner's latencies (its NCCL_DEBUG_SUBSYS=TUNING table prints them to 0.1 us).
        ring, tree = (allreduce_latency_us(self.ident, algo) for algo in ("ring", "tree"))
        return [*fit(parts, self.width, "[NCCL] ", "[NCCL]   "),
                *fit([f"Ring latency: {ring:.1f}us", f"Tree latency: {tree:.1f}us",
                      f"Bus bandwidth: {self.busbw:,.1f} GB/s"], self.width, "[NCCL] ", "[NCCL]   "),
                *fit([f"Calls since last report: {calls[0]}", *calls[1:]], self.width, "[NCCL] ", "[NCCL]   ",
                     sep=", ")]

    # -- validation, checkpoint, export, summary ----------------------------
    def _validation(self, e: ev.Validation) -> list[str]:
        b = self.ident.hyper.eval_batches
        val = round(e.val_loss, 4)
        return [self._barred("  Evaluating: ", f"| {b}/{b} batches"),
                *self._wrap(row(f"  Val Loss: {val:.4f}", f"Val PPL: {safe_exp(val):.2f}")),
                *self._wrap(row(f"  Eval time: {e.eval_time_s:.1f}s",
                                f"{e.samples / max(e.eval_time_s, 1e-9):,.0f} samples/s"))]

    def _checkpoint(self, e: ev.Checkpoint) -> list[str]:
        return [self._barred("  Saving model shards: ", f"| {e.shards}/{e.shards}"),
                *self._wrap(row(f"  Model weights: {_gb(e.model_bytes)}",
                                f"Optimizer state: {_gb(e.optimizer_bytes)}")),
                "  Saving scheduler state...", f"  Path: {e.path}", f"  Checkpoint saved in {e.seconds:.1f}s"]

    def _merging(self) -> list[str]:
        """Gathering the shards before the export, where the weights are in
        shards: ZeRO-3 splits every parameter over the data-parallel ranks,
        tensor and pipeline parallelism over the model-parallel ones. Under
        ZeRO-1/2 (and on one GPU) every rank already holds the whole bf16
        weights: nothing to merge."""
        p = self.ident.parallel
        shards = (p.dp if p.zero >= 3 else 1) * p.tp * p.pp
        if shards == 1:
            return []
        zero = "FSDP" if p.kind == "fsdp" else f"ZeRO-{p.zero}"
        what = zero if p.zero >= 3 and p.dp > 1 else "model-parallel"
        return [*self._wrap(f"  Consolidating {what} shards into {self.ident.gpu.precision} weights..."),
                self._barred("  Merging shards: ", f"| {shards}/{shards}")]

    def _export(self, e: ev.Export) -> list[str]:
        # Where it went is the summary's last row (as in the seeds), said once.
        shards = [f for f in e.files if f.endswith(".safetensors")]
        files = f"{len(shards)} file{'s' if len(shards) > 1 else ''}"
        return self._wrap(row(f"  Exporting to SafeTensors format: {files}", _gb(e.bytes), sep=", "))

    def _summary(self, e: ev.Summary) -> list[str]:
        loss = round(e.final_loss, 4)
        model = f"{e.model} (fine-tuned)" if e.fine_tuned else e.model  # from a base model's weights
        rows = ["", RULE, "Training Summary", RULE, f"Model: {model}", f"Total epochs: {e.epochs}",
                f"Total steps: {e.steps:,}", f"Tokens: {_tokens(e.tokens)}", f"Final loss: {loss:.4f}",
                f"Final PPL: {safe_exp(loss):.2f}", f"Best val loss: {e.best_val_loss:.4f}",
                f"Training time: {duration(e.train_time_s)}",
                f"Avg throughput: {e.avg_tokens_per_s:,.0f} tok/s", f"Output: {e.output}", RULE]
        return [text for r in rows for text in self._wrap(f"  {r}")]


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _share(h: Any) -> str:
    """How much of the dataset the run trains on: whole epochs, or a share of one."""
    if h.total_steps % h.steps_per_epoch == 0:
        return _plural(h.total_steps // h.steps_per_epoch, "epoch")
    share = h.total_steps / h.steps_per_epoch
    if share > 1:
        return f"{share:.2f} epochs"
    pct = 100 * share  # a few significant digits, never in exponent form (99.7%, not 1e+02%)
    if pct < 0.01:
        return "<0.01% of an epoch"
    return f"{pct:.3g}% of an epoch" if pct >= 10 else f"{pct:.2g}% of an epoch"


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


def _layout(i: Any) -> list[str]:
    """The banner's parallelism: ZeRO only where it shards, over data-parallel ranks."""
    p = i.parallel
    if i.world == 1:
        return ["single GPU"]
    return [f"DP={p.dp} x TP={p.tp} x PP={p.pp}", *([_strategy(p)] if p.dp > 1 else [])]


# What each data-parallel strategy shards of the model's state (world/memory.py's kinds).
SHARDED = {1: "optimizer states", 2: "optimizer states + gradients", 3: "parameters, gradients + optimizer"}
FSDP_MODES = {3: "FULL_SHARD", 2: "SHARD_GRAD_OP"}


def _strategy(p: Any) -> str:
    """The banner's name for how the data-parallel ranks hold the state."""
    if p.kind == "ddp":
        return "DDP"
    if p.kind == "fsdp":
        return f"FSDP {FSDP_MODES[p.zero]}"
    if p.kind == "megatron":
        return "distributed optimizer" if p.zero else "DDP"
    return f"ZeRO stage {p.zero}" if p.zero else "DDP"


def _data_parallel(p: Any) -> str:
    """What the data-parallel ranks shard: nothing under DDP (each holds a replica)."""
    if not p.zero:
        return "DDP: a full replica on each GPU"
    if p.kind == "fsdp":
        return f"FSDP {FSDP_MODES[p.zero]}: {SHARDED[p.zero]} sharded"
    if p.kind == "megatron":
        return f"distributed optimizer: {SHARDED[1]} sharded"
    return f"ZeRO-{p.zero}: {SHARDED[p.zero]} sharded"


def _stack(v: Any, vendor: str) -> list[str]:
    """The banner's software stack under the framework, one part each."""
    return [f"{name}: {value}" for name, value in zip(STACK[vendor], (v.nccl, v.cuda, v.cudnn, v.driver),
                                                       strict=True)]


def _memory(i: Any) -> Row:
    """What each GPU holds of the model's state (world/memory.py's accounting):
    bf16 weights and grads, fp32 Adam state. In decimal GB like the line
    above it (the seeds' 141.2 GB of fp16 over 64 GPUs: "2.2 GB model"), so
    one GPU's model is the whole model's bf16 size."""
    state = state_bytes(i.model, i.parallel)
    return row(f"  Memory per GPU: {_gb(state['weights'])} model", f"+ {_gb(state['grads'])} grads",
               f"+ {_gb(state['optimizer'])} optimizer", sep=" ")


def _sharding(p: Any) -> str:
    parts = [f"{p.dp}-way data parallel ({_data_parallel(p)})"] if p.dp > 1 else []
    if p.tp > 1:
        parts.append(f"{p.tp}-way tensor parallel")
    if p.pp > 1:
        parts.append(f"{p.pp}-stage pipeline")
    return ", ".join(parts)
