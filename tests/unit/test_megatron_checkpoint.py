"""Megatron's checkpoints on disk, as each pinned megatron-core version lays
them out (NVIDIA/Megatron-LM core_v0.X.0 megatron/training/checkpointing.py
save_checkpoint and get_checkpoint_name; megatron/core/dist_checkpointing/
serialization.py save, strategies/torch.py and filesystem_async.py; torch's
torch/distributed/checkpoint/filesystem.py and metadata.py), and finding
one again as load_checkpoint does. Pickles are only read as opcodes
(pickletools.genops): nothing is unpickled."""

from __future__ import annotations

import dataclasses
import os
import pickletools
import zipfile
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.checkpoint import layouts
from fakerun.checkpoint.megatron import MegatronWriter
from fakerun.checkpoint.reader import CheckpointError
from fakerun.checkpoint.store import keeps_holes
from fakerun.config import script_args
from fakerun.errors import UsageError
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.memory import Parallelism

WHEN = 1_800_000_000.0


def _ident(version: str = "0.10.0", tp: int = 2, pp: int = 2, dp: int = 2, zero: int = 1) -> identity.Identity:
    (versions,) = [v for v in catalog.versions() if v.megatron == version]
    ident = identity.build(5, 1, 2, 12, versions=versions, model="Llama-3.2-1B")
    return dataclasses.replace(ident, nproc=tp * pp * dp, parallel=Parallelism(tp, pp, dp, zero, "megatron"))


def _save(root: Path, ident: identity.Identity, *args: str, step: int = 4, sparse: bool = False) -> Path:
    writer = layouts.writer_for("megatron", layouts.Saving(root, ident, 5, sparse=sparse, script_args=args))
    assert isinstance(writer, MegatronWriter)
    writer.event(ev.Checkpoint(step, 1, f"{root}/iter_{step:07d}/", 1, 1, 1, 3.0, WHEN))
    return root / f"iter_{step:07d}"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _strings(data: bytes) -> list[str]:
    return [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)]


def test_torch_dist_writes_common_metadata_and_two_files_per_rank(tmp_path):
    """TP 2 x PP 2 x DP 2: every one of the 8 ranks writes __<rank>_0 and
    __<rank>_1 (--ckpt-fully-parallel-save spreads its group's tensors over
    its data-parallel ranks); rank 0 common.pt, .metadata and, last,
    metadata.json; then the tracker file names the iteration."""
    folder = _save(tmp_path, _ident())
    shards = {f"iter_0000004/__{r}_{k}.distcp" for r in range(8) for k in range(2)}
    assert _tree(tmp_path) == {"iter_0000004", "latest_checkpointed_iteration.txt", "iter_0000004/common.pt",
                               "iter_0000004/.metadata", "iter_0000004/metadata.json", *shards}
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_bytes() == b"4"
    assert (folder / "metadata.json").read_text() == ('{"sharded_backend": "torch_dist", "sharded_backend_version": '
                                                      '1, "common_backend": "torch", "common_backend_version": 1}')
    assert os.stat(folder).st_mtime == WHEN  # the save's time, which --resume reads back


def test_the_metadata_pickle_names_torchs_classes_and_every_shard(tmp_path):
    folder = _save(tmp_path, _ident(), sparse=True)
    data = (folder / ".metadata").read_bytes()
    assert data[:2] == b"\x80\x04"  # pickle.dump's protocol 4, as torch's FileSystemWriter.finish
    strings = _strings(data)
    for name in ("Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
                 "BytesStorageMetadata", "MetadataIndex", "_StorageInfo", "Size", "bfloat16", "float32",
                 "mcore_data", "storage_meta"):
        assert name in strings
    keys = {"embedding.word_embeddings.weight", "decoder.layers.self_attention.linear_qkv.weight",
            "decoder.layers.mlp.linear_fc2.weight", "decoder.final_layernorm.weight",
            "optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight", "rng_state/shard_1.1_2.2",
            "rerun_state_machine_state/shard_0.0_2.2"}
    assert keys <= set(strings)
    files = {n for n in os.listdir(folder) if n.endswith(".distcp")}
    assert {s for s in strings if s.endswith(".distcp")} == files  # every shard file holds items


def test_the_shards_hold_the_runs_bytes_at_their_true_size(tmp_path):
    """bf16 weights and the fp32 main copy and Adam's moments: 14 bytes a
    parameter (physics.checkpoint_bytes), within the padded vocabulary and
    torch.save's records."""
    ident = _ident()
    folder = _save(tmp_path, ident, sparse=True)
    if not keeps_holes(tmp_path):
        pytest.skip("the file system keeps no holes")
    total = sum(p.stat().st_size for p in folder.glob("*.distcp"))
    assert total == pytest.approx(sum(sim.checkpoint_bytes(ident).values()), rel=0.03)
    assert sum(p.stat().st_blocks for p in folder.glob("*.distcp")) == 0  # holes: nothing written
    by_rank = {r: sum((folder / f"__{r}_{k}.distcp").stat().st_size for k in range(2)) for r in range(8)}
    for group in ((0, 2), (1, 3), (4, 6), (5, 7)):  # a (tensor, pipeline) rank's two data-parallel ranks
        low, high = sorted(by_rank[r] for r in group)
        assert high < 1.5 * low  # its tensors spread over both


def test_common_pt_is_a_torch_save_of_the_args_and_the_iteration(tmp_path):
    folder = _save(tmp_path, _ident(), "--num-layers", "16", "--save", str(tmp_path), "--save-interval", "4")
    with zipfile.ZipFile(folder / "common.pt") as zf:
        assert sorted(zf.namelist()) == ["common/.data/serialization_id", "common/byteorder", "common/data.pkl",
                                         "common/version"]
        strings = _strings(zf.read("common/data.pkl"))
    assert {"argparse Namespace", "checkpoint_version", "iteration", "opt_param_scheduler",
            "param_state_sharding_type", "fully_sharded_model_space"} <= set(strings)


@pytest.mark.parametrize("version,args,tp,pp,dirs", [
    ("0.8.0", (), 1, 1, ["mp_rank_00"]),  # 0.8's default: the legacy format
    ("0.10.0", ("--ckpt-format", "torch"), 2, 2,
     ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"])])
def test_the_legacy_format_has_a_folder_per_model_parallel_rank(tmp_path, version, args, tp, pp, dirs):
    folder = _save(tmp_path, _ident(version, tp, pp, 2), *args)
    assert sorted(os.listdir(folder)) == dirs
    for d in dirs:
        assert sorted(os.listdir(folder / d)) == ["distrib_optim.pt", "model_optim_rng.pt"]
        with zipfile.ZipFile(folder / d / "model_optim_rng.pt") as zf:
            assert "model_optim_rng/data.pkl" in zf.namelist()
    plain = _save(tmp_path / "plain", _ident(version, tp, pp, 2, zero=0), *args)
    assert os.listdir(plain / dirs[0]) == ["model_optim_rng.pt"]  # no distributed optimizer, no distrib_optim.pt


# -- finding one to resume from ------------------------------------------------------
def test_the_tracker_names_the_checkpoint_to_resume(tmp_path):
    ident = _ident()
    _save(tmp_path, ident, step=4)
    _save(tmp_path, ident, step=8)
    found = layouts.find("megatron", tmp_path)
    assert (found.step, found.path, found.time, found.seed, found.model) == (
        8, tmp_path / "iter_0000008", WHEN, None, None)
    assert layouts.find("megatron", tmp_path / "iter_0000004").step == 4


@pytest.mark.parametrize("tracker,said", [
    (None, "no latest_checkpointed_iteration.txt in it"), (b"release", "got release"),
    (b"4\n", None), (b"0", "from 1 to"), (b"12", "no such directory (the tracker names iteration 12)"),
    (b"\xff", "not text")])
def test_a_tracker_file_is_read_as_megatron_reads_it(tmp_path, tracker, said):
    _save(tmp_path, _ident(), step=4)
    path = tmp_path / "latest_checkpointed_iteration.txt"
    path.unlink()
    if tracker is not None:
        path.write_bytes(tracker)
    if said is None:
        assert layouts.find("megatron", tmp_path).step == 4  # read_metadata strips the text
        return
    with pytest.raises(CheckpointError, match=said.replace("(", r"\(").replace(")", r"\)")):
        layouts.find("megatron", tmp_path)


def test_an_incomplete_iteration_is_refused(tmp_path):
    folder = _save(tmp_path, _ident(), step=4)
    (folder / "metadata.json").unlink()  # written last: a save killed before it
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        layouts.find("megatron", tmp_path)
    (folder / "metadata.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="not a checkpoint's config"):
        layouts.find("megatron", tmp_path)


def test_a_format_fakerun_does_not_write_is_refused():
    with pytest.raises(UsageError, match="--ckpt-format zarr: fakerun writes Megatron's torch and torch_dist"):
        script_args.read("pretrain_gpt.py", ["--ckpt-format", "zarr"])
