"""torch.save(state_dict) of 16-bit tensors, as its bytes are laid out
(torch/serialization.py `_save` at torch 2.3.1, 2.5.1 and 2.9.1): a zip of
stored records under a folder named after the file, in torch's order —
`data.pkl`, (from 2.9: `.format_version` "1" and `.storage_alignment` "64"),
`byteorder`, `data/<key>` for each storage in the order the pickle first
met it, `version`, `.data/serialization_id`.

data.pkl is the pickle torch's Pickler writes (protocol 2): an OrderedDict
whose values are `torch._utils._rebuild_tensor_v2` calls on persistent ids
`('storage', torch.HalfStorage | torch.BFloat16Storage, key, location,
numel)`. Those GLOBALs and ids are written as bytes here, as the real file
holds them; nothing in fakerun ever unpickles such a file. The opcodes and
memo numbers are Python's pickler's, checked against a real torch.save in
tests/fixtures/torchsave/ (capture.py).

The storages' data (2 bytes a parameter: 14 GB for a 7B model) is left
out: the `data/<key>` records are absent and the file is that much shorter
than the real one, as the safetensors files leave their data out
(checkpoint/writer.py). They are not holes of their true size under
--sparse-checkpoints either: store.write makes a hole only of a file's tail
(ftruncate), and a zip's central directory comes after its last record; and
each record's header carries the CRC-32 of its bytes, which for gigabytes of
zeros would have to be computed without reading them (zlib's crc32_combine,
which Python's zlib does not offer).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from random import Random

from fakerun.checkpoint.torchsave import STAMP, VERSION

PROTOCOL = 2  # torch.serialization.DEFAULT_PROTOCOL
STORAGES = {"F16": "HalfStorage", "BF16": "BFloat16Storage"}  # the typed storage of each safetensors dtype
REBUILD = "torch._utils\n_rebuild_tensor_v2\n"
ORDERED_DICT = "collections\nOrderedDict\n"
BATCHSIZE = 1000  # pickle's _BATCHSIZE: SETITEMS in batches of this many items
FORMAT_VERSION_FROM = (2, 6)  # 2.5.1's _save writes no .format_version; 2.9.1's does
STORAGE_ALIGNMENT = b"64"  # config.save.storage_alignment: "Defaults to 64" (_get_storage_alignment at 2.9.1)


@dataclass(frozen=True)
class Entry:
    """One state-dict value: a tensor on storage `storage` (an index: the
    order torch.save numbers its storages in), or, `same_as`, the very
    tensor object of an earlier key (ZeRO-3's consolidated dict ties shared
    parameters that way)."""

    name: str
    shape: tuple[int, ...]
    storage: int
    same_as: str | None = None


class _Pickle:
    """The opcodes pickle.Pickler(protocol=2) writes for torch's state dict,
    with its memo: a repeated object (the rebuild function, a storage class,
    a storage key, one tensor under two names) is a BINGET of its first."""

    def __init__(self, dtype: str, location: str, location_shared: bool) -> None:
        self.out = io.BytesIO()
        self.memo: dict[object, int] = {}
        self.storage_class = f"torch\n{STORAGES[dtype]}\n"
        self.location, self.location_shared = location, location_shared

    def put(self, key: object) -> None:
        self.memo[key] = n = len(self.memo)
        self.out.write(b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n))

    def get(self, key: object) -> bool:
        n = self.memo.get(key)
        if n is None:
            return False
        self.out.write(b"h" + bytes([n]) if n < 256 else b"j" + struct.pack("<I", n))
        return True

    def global_(self, ref: str) -> None:
        if not self.get(("global", ref)):
            self.out.write(b"c" + ref.encode())
            self.put(("global", ref))

    def text(self, value: str, key: object) -> None:
        """A str, memoized by `key` (pickle memoizes by object identity:
        equal strings built anew are written anew)."""
        if not self.get(key):
            data = value.encode()
            self.out.write(b"X" + struct.pack("<I", len(data)) + data)
            self.put(key)

    def int_(self, value: int) -> None:
        if 0 <= value <= 0xFF:
            self.out.write(b"K" + bytes([value]))
        elif 0 <= value <= 0xFFFF:
            self.out.write(b"M" + struct.pack("<H", value))
        elif -0x80000000 <= value <= 0x7FFFFFFF:
            self.out.write(b"J" + struct.pack("<i", value))
        else:
            data = pickle.encode_long(value)  # type: ignore[attr-defined]
            self.out.write(b"\x8a" + bytes([len(data)]) + data)

    def ints(self, values: tuple[int, ...], key: object) -> None:
        """A tuple of ints: TUPLE1-3 after its items, else MARK ... TUPLE."""
        if not values:
            self.out.write(b")")
            return
        if len(values) > 3:
            self.out.write(b"(")
        for v in values:
            self.int_(v)
        self.out.write(b"t" if len(values) > 3 else b"\x85\x86\x87"[len(values) - 1:len(values)])
        self.put(key)

    def ordered_dict(self, key: object) -> None:
        """OrderedDict() by its __reduce_ex__(2): the class, no arguments."""
        self.global_(ORDERED_DICT)
        self.out.write(b")R")
        self.put(key)

    def tensor(self, n: int, entry: Entry, numel: dict[int, int]) -> None:
        """_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())."""
        self.global_(REBUILD)
        self.out.write(b"((")
        self.text("storage", "storage")
        self.global_(self.storage_class)
        self.text(str(entry.storage), ("key", entry.storage))
        self.text(self.location, "location" if self.location_shared else ("location", n))
        self.int_(numel[entry.storage])
        self.out.write(b"t")
        self.put(("pid", n))
        self.out.write(b"Q")
        self.int_(0)
        self.ints(entry.shape, ("size", n))
        self.ints(contiguous(entry.shape), ("stride", n))
        self.out.write(b"\x89")
        self.ordered_dict(("hooks", n))
        self.out.write(b"t")
        self.put(("args", n))
        self.out.write(b"R")
        self.put(("tensor", entry.name))


def contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A contiguous tensor's strides."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def numels(entries: list[Entry]) -> dict[int, int]:
    """Each storage's element count: the largest tensor on it (here a
    storage holds whole tensors, which share it whole)."""
    counts: dict[int, int] = {}
    for e in entries:
        size = 1
        for d in e.shape:
            size *= d
        counts[e.storage] = max(counts.get(e.storage, 0), size)
    return counts


def state_dict_pickle(entries: list[Entry], dtype: str, location: str = "cpu",
                      location_shared: bool = True) -> bytes:
    """data.pkl of torch.save(OrderedDict(entries)). `location`: the
    storages' location tag ("cpu" is one constant string, memoized once;
    "cuda:0" is built anew for each storage: `location_shared` False)."""
    p, counts = _Pickle(dtype, location, location_shared), numels(entries)
    p.out.write(pickle.PROTO + bytes([PROTOCOL]))
    p.ordered_dict("state_dict")
    for start in range(0, len(entries), BATCHSIZE):
        batch = entries[start:start + BATCHSIZE]
        if len(batch) > 1:
            p.out.write(b"(")
        for n, entry in enumerate(batch, start):
            p.text(entry.name, ("name", n))
            if entry.same_as is None or not p.get(("tensor", entry.same_as)):
                p.tensor(n, entry, counts)
        p.out.write(b"u" if len(batch) > 1 else b"s")
    p.out.write(b".")
    return p.out.getvalue()


def archive(file_name: str, entries: list[Entry], dtype: str, serialization_id: str,
            torch_version: str, location: str = "cpu", location_shared: bool = True) -> bytes:
    """torch.save(state_dict, file_name)'s bytes, the storages' data left out."""
    folder = PurePosixPath(file_name).stem
    records = [("data.pkl", state_dict_pickle(entries, dtype, location, location_shared))]
    if _parts(torch_version) >= FORMAT_VERSION_FROM:
        records += [(".format_version", b"1"), (".storage_alignment", STORAGE_ALIGNMENT)]
    records += [("byteorder", b"little"), ("version", VERSION),
                (".data/serialization_id", serialization_id.encode())]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            zf.writestr(zipfile.ZipInfo(f"{folder}/{name}", STAMP), data)
    return buffer.getvalue()


def serialization_id(r: Random) -> str:
    """`.data/serialization_id`: two unsigned 64-bit numbers, each 0-padded
    to 20 digits (caffe2/serialize/inline_container.cc
    PyTorchStreamWriter::writeSerializationId: a hash of the record names,
    then a combined CRC-32 of the records' data). Torch computes both; the
    data's CRCs are of weights nobody has, so both are drawn from `r`."""
    return "".join(f"{r.getrandbits(64):020d}" for _ in range(2))


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".") if p.isdigit())
