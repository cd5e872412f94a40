"""checkpoint/torchzip.py and the archives built on it against real
torch.save files (tests/fixtures/torchsave/capture_archives.py, torch
2.13.0+cpu): whole files byte for byte, their storages holes of zeros; the
records of each pinned torch (torch/serialization.py `_save` at 2.3.1,
2.4.1, 2.5.1, 2.9.1); zip64 past 4 GiB as Python's zipfile reads it."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest

from fakerun.checkpoint import store, torchsave, torchzip
from fakerun.checkpoint.torchpickle import Ordered, Storage, Tensor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchsave"
GROUP = {"lr": 3e-05, "betas": (0.9, 0.999), "eps": 1e-08, "amsgrad": False, "foreach": None,
         "maximize": False, "capturable": False, "differentiable": False, "fused": None, "initial_lr": 5e-05}
PARAMS = [("model.embed_tokens.weight", (8, 4)), ("model.layers.0.self_attn.q_proj.weight", (4, 4)),
          ("model.norm.weight", (4,))]


def tensor(dtype: str, *shape: int) -> Tensor:
    numel = 1
    for n in shape:
        numel *= n
    return Tensor(Storage(dtype, numel), shape)


def described(name: str) -> object:
    """capture_archives.py's objects, as fakerun describes them."""
    if name == "plain.pt":
        return {"base_lrs": [5e-05, 5e-05], "last_epoch": 4, "verbose": False, "_step_count": 5,
                "_get_lr_called_within_step": False, "_last_lr": [3e-05, 3e-05], "lr_lambdas": [None, None]}
    if name == "zeros.bin":
        emb = tensor("F32", 8, 4)
        return Ordered((("model.embed_tokens.weight", emb), ("model.norm.weight", tensor("BF16", 4)),
                        ("model.layers.0.mlp.up_proj.weight", tensor("F32", 2, 1, 1, 4)),
                        ("lm_head.weight", Tensor(emb.storage, (8, 4)))))
    state = {n: {"step": tensor("F32"), "exp_avg": tensor("F32", *s), "exp_avg_sq": tensor("F32", *s)}
             for n, s in PARAMS}
    names = [n for n, _ in PARAMS]
    return {"state": state, "param_groups": [{"weight_decay": 0.0, **GROUP, "params": names[:2]},
                                             {"weight_decay": 0.0, **GROUP, "params": names[2:]}]}


def materialized(sparse: store.Sparse) -> bytes:
    """The file as a reader sees it: the holes read as zeros."""
    out = bytearray(sparse.size)
    for at, piece in sparse.pieces:
        out[at:at + len(piece)] = piece
    return bytes(out)


@pytest.mark.parametrize("name", ["plain.pt", "zeros.bin", "optim.bin"])
def test_whole_archives_are_torchs_byte_for_byte(name):
    real = (FIXTURES / name).read_bytes()
    folder = name.rsplit(".", 1)[0]
    serial = zipfile.ZipFile(io.BytesIO(real)).read(f"{folder}/.data/serialization_id").decode()
    assert materialized(torchsave.sparse(name, described(name), serial, "2.13.0")) == real


def test_without_holes_the_storages_records_are_left_out():
    real = zipfile.ZipFile(FIXTURES / "optim.bin")
    ours = zipfile.ZipFile(io.BytesIO(torchsave.archive("optim.bin", described("optim.bin"), "0" * 40, "2.13.0")))
    assert ours.namelist() == [n for n in real.namelist() if "/data/" not in n]
    assert ours.read("optim/data.pkl") == real.read("optim/data.pkl")
    assert ours.testzip() is None


@pytest.mark.parametrize(("torch_version", "extra"), [("2.3.1", []), ("2.4.1", []), ("2.5.1", []),
                                                      ("2.9.1", [".format_version", ".storage_alignment"])])
def test_each_pinned_torch_writes_its_records(torch_version, extra):
    """_save at each pin: .format_version and .storage_alignment after data.pkl from 2.6 on."""
    sparse = torchsave.sparse("zeros.bin", described("zeros.bin"), "1" * 40, torch_version)
    names = zipfile.ZipFile(io.BytesIO(materialized(sparse))).namelist()
    data = ["data/0", "data/1", "data/2"]
    assert names == [f"zeros/{n}" for n in ["data.pkl", *extra, "byteorder", *data, "version",
                                            ".data/serialization_id"]]


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 20, (1 << 26) + 7])
def test_the_crc_of_zeros_is_zlibs(size):
    expected = 0
    for left in range(size, 0, -(1 << 24)):  # zlib itself, a chunk at a time
        expected = zlib.crc32(bytes(min(left, 1 << 24)), expected)
    assert torchzip.zeros_crc(size) == expected


def test_a_storage_past_4_gib_is_zip64_as_miniz_writes_it(tmp_path):
    """A 4.3 GiB record: miniz's zip64 fields (local, descriptor, central),
    read back by Python's zipfile from the sparse file on disk."""
    big = (1 << 32) + 64
    obj = {"a": Tensor(Storage("F32", big // 4), (big // 4,)), "b": tensor("BF16", 3)}
    sparse = torchsave.sparse("big.pt", obj, "2" * 40, "2.9.1")
    assert sparse.size > big and sum(len(p) for _, p in sparse.pieces) < 8192
    store.write(tmp_path / "ckpt", {"big.pt": sparse}, last="big.pt")
    path = tmp_path / "ckpt" / "big.pt"
    with zipfile.ZipFile(path) as zf:
        info = {i.filename: i for i in zf.infolist()}
        crc = torchzip.zeros_crc(big)
        assert (info["big/data/0"].file_size, info["big/data/0"].CRC) == (big, crc)
        assert info["big/data/1"].header_offset > big  # its offset in the central zip64 field
        with zf.open("big/data/1") as member:  # the local header checks out
            assert member.read() == bytes(6)
        assert zf.read("big/version") == b"3\n"
    if store.keeps_holes(tmp_path):
        assert path.stat().st_size == sparse.size and path.stat().st_blocks * 512 < 1 << 20
