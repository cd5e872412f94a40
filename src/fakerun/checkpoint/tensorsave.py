"""torch.save(state_dict) of a model's tensors, as the pinned torch lays
out its bytes (torch/serialization.py `_save` at torch 2.3.1, 2.5.1 and
2.9.1; the zip: checkpoint/torchzip.py).

data.pkl is the pickle torch's Pickler writes (protocol 2): an OrderedDict
whose values are `torch._utils._rebuild_tensor_v2` calls on persistent ids
`('storage', torch.HalfStorage | torch.BFloat16Storage | torch.FloatStorage,
key, location, numel)` (checkpoint/torchsave.py's Tensor). Those GLOBALs and
ids are written as bytes here, as the real file holds them; nothing in
fakerun ever unpickles such a file. The opcodes and memo numbers are
Python's pickler's, checked against a real torch.save in
tests/fixtures/torchsave/ (capture.py).

The storages' data (2 bytes a parameter: 14 GB for a 7B model) is left out
(the `data/<key>` records absent, the file that much shorter than the real
one, as the safetensors files leave their data out), or under
--sparse-checkpoints written as holes of their true size (`sparse`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random

from fakerun.checkpoint import torchsave
from fakerun.checkpoint.store import Sparse
from fakerun.checkpoint.torchpickle import CPU, Ordered, Storage, Tensor


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


def state_dict(entries: list[Entry], dtype: str, location: str = CPU) -> Ordered:
    """The OrderedDict of tensors `entries` describe; each storage as large
    as its largest tensor (here a storage holds whole tensors)."""
    numel: dict[int, int] = {}
    for e in entries:
        numel[e.storage] = max(numel.get(e.storage, 0), math.prod(e.shape))
    storages = {n: Storage(dtype, count, location) for n, count in numel.items()}
    tensors: dict[str, Tensor] = {}
    for e in entries:
        tensors[e.name] = tensors[e.same_as] if e.same_as else Tensor(storages[e.storage], e.shape)
    return Ordered(tuple(tensors.items()))


def state_dict_pickle(entries: list[Entry], dtype: str, location: str = CPU) -> bytes:
    """data.pkl of torch.save(OrderedDict(entries))."""
    return torchsave.pickled(state_dict(entries, dtype, location))[0]


def archive(file_name: str, entries: list[Entry], dtype: str, serialization_id: str,
            torch_version: str, location: str = CPU) -> bytes:
    """torch.save(state_dict, file_name)'s bytes, the storages' data left out."""
    return torchsave.archive(file_name, state_dict(entries, dtype, location), serialization_id, torch_version)


def sparse(file_name: str, entries: list[Entry], dtype: str, serialization_id: str,
           torch_version: str, location: str = CPU) -> Sparse:
    """The same file at its true size, the storages' data a hole."""
    return torchsave.sparse(file_name, state_dict(entries, dtype, location), serialization_id, torch_version)


def serialization_id(r: Random) -> str:
    """`.data/serialization_id`: two unsigned 64-bit numbers, each 0-padded
    to 20 digits (caffe2/serialize/inline_container.cc
    PyTorchStreamWriter::writeSerializationId: a hash of the record names,
    then a combined CRC-32 of the records' data). Torch computes both; the
    data's CRCs are of weights nobody has, so both are drawn from `r`."""
    return "".join(f"{r.getrandbits(64):020d}" for _ in range(2))
