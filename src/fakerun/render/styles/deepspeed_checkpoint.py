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
