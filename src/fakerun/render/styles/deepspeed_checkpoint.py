"""What a DeepSpeed engine saves, as it logs it: a checkpoint (which rank
writes which file of the tag's folder) and the 16-bit model export, with the
pinned version's announcements of each write."""

from __future__ import annotations

from fakerun import events as ev
from fakerun.render.lines import Line
from fakerun.render.styles.deepspeed_log import DeepSpeedLog
from fakerun.world import ds_config
from fakerun.world import physics as sim
from fakerun.world.identity import Identity

# The spread, in seconds, of the moments the ranks start their optimizer
# shards: each leaves the model-state save on its own.
SHARD_START_LAG = 0.02
LOAD_START_LAG = 0.004  # the ranks leave initialize() this far apart, and start their loads


class CheckpointSave:
    """engine.save_checkpoint: rank 0 announces the tag, each data-parallel
    rank 0 (every rank, under ZeRO-3) writes its model states, every rank
    then writes its own optimizer shard (fp16: no bf16_ prefix)."""

    def __init__(self, out: DeepSpeedLog, ident: Identity, e: ev.Checkpoint, save_dir: str, tag: str) -> None:
        self.out, self.e, self.tag, self.ident = out, e, tag, ident
        self.folder = f"{save_dir}/{tag}"
        self.ranks = range(ident.world)

    def model_path(self, rank: int) -> str:
        return f"{self.folder}/{ds_config.model_states(self.ident, rank)}"

    def shard_path(self, rank: int) -> str:
        return f"{self.folder}/{ds_config.optim_states(self.ident, rank)}"

    def done(self, rank: int) -> float:
        """When `rank` finishes its own writes: each rank takes its own time
        (the slowest one's is the checkpoint's)."""
        return self.e.time - self.e.seconds + sim.checkpoint_seconds(self.ident, rank, self.e.step)

    def lines(self) -> list[Line]:
        o, v, e = self.out, self.out.v, self.e
        start = e.time - e.seconds
        writers = [r for r in self.ranks if ds_config.writes_model_states(self.ident, r)]
        out = o.dist(start + 0.001, f"[Torch] Checkpoint {self.tag} is about to be saved!")
        for rank in writers:
            if rank in v["model_ckpt_ranks"]:
                out += o.dist(start + 0.02, f"Saving model checkpoint: {self.model_path(rank)}", rank)
            if "ckpt_saving" in v:
                out += o.log(start + 0.02, "ckpt_saving", f"[Torch] Saving {self.model_path(rank)}...", rank)
        if "ckpt_saved" not in v:  # 0.18: torch.save is no longer announced
            return out
        for rank in writers:
            out += o.log(start + 0.3 * (self.done(rank) - start), "ckpt_saved",
                         f"[Torch] Saved {self.model_path(rank)}.", rank)
        zero = ds_config.writes_optim_states(self.ident)
        shards = {rank: self.shard_path(rank) for rank in self.ranks if zero}
        for rank, shard in shards.items():
            began = start + 0.3 * e.seconds + 0.01 + SHARD_START_LAG * sim.uniform(
                self.ident.seed, "ds-shard", rank, e.step)
            out += o.log(began, "ckpt_saving", f"[Torch] Saving {shard}...", rank)
        for rank, shard in shards.items():
            out += o.log(self.done(rank) - 0.05, "ckpt_saved", f"[Torch] Saved {shard}.", rank)
            out += o.log(self.done(rank) - 0.049, "zero_saved", f"zero checkpoint saved {shard}", rank)
        for rank in self.ranks:
            ready = f"[Torch] Checkpoint {self.tag} is ready now!"
            out += o.log(self.done(rank) - 0.01, "ckpt_ready", ready, rank)
        return out


def export_lines(out: DeepSpeedLog, ident: Identity, e: ev.Export, global_step: int) -> list[Line]:
    """model_engine.save_16bit_model(output_dir): rank 0 writes pytorch_model.bin;
    each rank commits when its own part is done."""
    tag, path = f"global_step{global_step}", f"{e.path.rstrip('/')}/pytorch_model.bin"
    start = e.time - e.seconds
    done = {rank: start + sim.export_seconds(ident, rank, global_step) for rank in range(ident.world)}
    lines = out.dist(start, f"[Torch] Checkpoint {tag} is about to be saved!")
    lines += out.log(start + 0.002, "weights", f"Saving model weights to {path}, tag: {tag}")
    if "ckpt_saving" in out.v:
        lines += out.log(start + 0.003, "ckpt_saving", f"[Torch] Saving {path}...")
        lines += out.log(done[0] - 0.002, "ckpt_saved", f"[Torch] Saved {path}.")
        for rank in range(ident.world):
            ready = f"[Torch] Checkpoint {tag} is ready now!"
            lines += out.log(done[rank] - 0.001, "ckpt_ready", ready, rank)
    return lines


class CheckpointLoad:
    """model_engine.load_checkpoint(load_dir), where HelloDeepSpeed's
    train_bert_ds.py calls it: right after deepspeed.initialize, before
    training (engine.py load_checkpoint, _load_checkpoint, _load_zero_checkpoint
    at v0.14.4 ... v0.18.2). Every rank torch.loads its model states (the
    glob of _get_all_ckpt_names: mp_rank_00_model_states.pt, or its own
    zero_pp_rank_<dp>_... under ZeRO-3), then under ZeRO only its own
    optimizer shard (_get_all_zero_checkpoint_state_dicts: not elastic), and
    says it read the data-parallel size's state dicts. TorchCheckpointEngine.load
    announces each torch.load on every rank up to 0.16, on rank 0 alone
    (log_dist) from 0.18."""

    def __init__(self, out: DeepSpeedLog, ident: Identity, folder: str, step: int) -> None:
        self.out, self.ident, self.folder, self.step = out, ident, folder.rstrip("/"), step

    def files(self, rank: int) -> list[str]:
        """What `rank` torch.loads, in its order: each a file save_checkpoint wrote."""
        i = self.ident
        names = [ds_config.model_states(i, rank)]
        if ds_config.writes_optim_states(i):  # load_zero_checkpoint: ZeRO on (the style's fp16)
            names.append(ds_config.optim_states(i, rank))
        return [f"{self.folder}/{name}" for name in names]

    def seconds(self, rank: int) -> float:
        """A rank's reads: the checkpoint's bytes at the bandwidth a save
        writes them at (physics' checkpoint_seconds, its spread per rank)."""
        return sim.checkpoint_seconds(self.ident, rank, self.step)

    def lines(self, start: float, span: float) -> tuple[list[Line], float]:
        """The ranks' lines by time, within `span` seconds from `start`, and
        when the last rank is done: the load shares the start-up's window
        before the first step (as Megatron's load timer does), so the slowest
        rank's reads are scaled into it."""
        ranks = range(self.ident.world)
        scale = min(1.0, span / max(self.seconds(r) for r in ranks))
        timed: list[tuple[float, int, list[Line]]] = []
        for rank in ranks:
            began = start + LOAD_START_LAG * sim.uniform(self.ident.seed, "ds-load", rank, self.step)
            timed += self._rank(rank, began, self.seconds(rank) * scale)
        timed.sort(key=lambda t: (t[0], t[1]))
        return [line for _, _, group in timed for line in group], max(t for t, _, _ in timed)

    def _rank(self, rank: int, began: float, seconds: float) -> list[tuple[float, int, list[Line]]]:
        """One rank's torch.loads (the model states, then its shard: each for
        its share of the bytes), then what the ZeRO part says."""
        o, v, files = self.out, self.out.v, self.files(rank)
        model, shard = self._bytes()
        split = began + seconds * model / (model + shard) if len(files) > 1 else began + seconds
        spans = [(began, split), (split + 0.001, began + seconds)][:len(files)]
        said: list[tuple[float, str, str]] = []  # DeepSpeed's logger on this rank: (time, site, message)
        out: list[tuple[float, int, list[Line]]] = []
        for path, (t0, t1) in zip(files, spans, strict=True):
            if "ckpt_loading" in v:  # 0.14-0.16: every rank's logger.info
                said += [(t0, "ckpt_loading", f"[Torch] Loading checkpoint from {path}..."),
                         (t1, "ckpt_loaded", f"[Torch] Loaded checkpoint from {path}.")]
            elif rank == 0:  # 0.18: log_dist(..., ranks=[0])
                out += [(t0, rank, o.dist(t0, f"[Torch] Begin Load checkpoint from {path}...")),
                        (t1, rank, o.dist(t1, f"[Torch] End Load checkpoint from {path}..."))]
        if len(files) > 1:
            dp, done = self.ident.parallel.dp, spans[-1][1]
            said += [(done + 0.0005, "zero_read", f"successfully read {dp} ZeRO state_dicts for rank {rank}"),
                     (done + 0.02, "zero_loaded", f"loading {dp} zero partition checkpoints for rank {rank}")]
        return out + [(t, rank, o.log(t, where, text, rank)) for t, where, text in said]

    def _bytes(self) -> tuple[float, float]:
        """(one rank's model-states file, its optimizer shard): fp16 weights
        (ZeRO-3: its partition), and the fp32 master weights and Adam moments
        of its partition."""
        i, per = self.ident, sim.checkpoint_bytes(self.ident)
        dp = i.parallel.dp
        model = per["model"] / (dp if i.parallel.zero >= 3 else 1)
        return model, per["optimizer"] / dp
