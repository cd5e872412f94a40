"""torch.distributed.checkpoint's files as Megatron's torch_dist save and
accelerate's FSDP SHARDED_STATE_DICT save (dist_cp.save_state_dict with a
FileSystemWriter and the DefaultSavePlanner: `Writer`) write them: each
rank's `__<rank>_<k>.distcp` (FileSystemWriter: the prefix
`__<rank>_`, DEFAULT_SUFFIX ".distcp"; one file per non-empty bucket, the
items split over the buckets by _split_by_size_and_type: bytes round-robin,
tensors largest first into the emptiest) and the coordinator's `.metadata`,
a pickle of the Metadata dataclass (torch/distributed/checkpoint/
metadata.py, filesystem.py at torch 2.3.1, 2.4.1, 2.5.1 and 2.9.1: the
torch each megatron-core pin runs on), which MCoreSavePlanner extends with
`mcore_data` (megatron/core/dist_checkpointing/strategies/torch.py). Without
Megatron's planner, DefaultSavePlanner's flattening map is the planner data,
and FileSystemWriter.finish sets its StorageMeta (torch 2.4 and later) and
the DCP version "1.0.0" (2.9: CURRENT_DCP_VERSION).

A .distcp is the items' bytes one after the other: an io.BytesIO's raw, a
tensor's torch.save archive. Their data is left out here (or a hole of the
file's true size); .metadata's offsets and lengths are where each item would
be. A tensor's archive is its bytes and the pinned torch's records around
them, as long as torch writes them (checkpoint/torchzip.py).

The pickle is written as pickle.dump writes it (protocol 4, the default of
the Python the pins run), naming torch's classes with GLOBAL opcodes as the
real file does; nothing here ever unpickles one.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from fakerun.checkpoint import torchsave
from fakerun.checkpoint.torchpickle import Storage, Tensor

METADATA = ".metadata"
SUFFIX = ".distcp"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
CONTIGUOUS = 0  # _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT


@dataclass(frozen=True)
class Chunk:
    """One rank's piece of a tensor: where it sits in the global tensor."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    writer: int  # the global rank that saves it


@dataclass(frozen=True)
class Sharded:
    """A key of the sharded state dict: a tensor (dtype, global shape, its
    chunks) or, with no dtype, a ShardedObject's bytes (one chunk)."""

    key: str
    shape: tuple[int, ...]
    dtype: str | None
    chunks: tuple[Chunk, ...]
    nbytes: int = 0  # a bytes object's size


def chunk_bytes(s: Sharded, c: Chunk) -> int:
    """The item's data: a tensor chunk's bytes (planner.py WriteItem.
    tensor_storage_size, filesystem.py _item_size), a bytes item's length."""
    return s.nbytes if s.dtype is None else math.prod(c.sizes) * DTYPE_BYTES[s.dtype]


def item_length(s: Sharded, c: Chunk, torch: str) -> int:
    """The item's length in its file: a bytes item's own; a tensor's
    torch.save(tensor, stream) (_write_item: the chunk copied to the CPU,
    its storage its own; a stream's archive is named "archive")."""
    return s.nbytes if s.dtype is None else _archive_length(s.dtype, c.sizes, torch)


@functools.cache
def _archive_length(dtype: str, sizes: tuple[int, ...], torch: str) -> int:
    tensor = Tensor(Storage(SAFETENSORS_DTYPES[dtype], math.prod(sizes)), sizes)
    return torchsave.sparse("archive", tensor, "0" * 40, torch).size


@dataclass(frozen=True)
class Writer:
    """A save through torch's own FileSystemWriter and DefaultSavePlanner:
    the writer's path as given (StorageMeta.checkpoint_id, a Path), its
    save_id (a uuid4), and the planner's map of each flattened key to its
    path in the nested state dict."""

    checkpoint_id: str
    save_id: str
    mappings: dict[str, tuple[str, ...]]


@dataclass
class Plan:
    """Where every item goes: file sizes, and each item's (file, offset, length)."""

    tensors: list[Sharded]
    torch: str  # the torch version, whose Metadata fields the pickle has
    writer: Writer | None = None  # None: Megatron's planner and writer
    files: dict[str, int] = field(default_factory=dict)
    places: dict[tuple[str, int], tuple[str, int, int]] = field(default_factory=dict)

    def metadata(self) -> bytes:
        buffer = io.BytesIO()
        _Writer(buffer, protocol=4).dump(_metadata(self))
        return buffer.getvalue()


def plan(tensors: list[Sharded], world: int, buckets: int, torch: str, writer: Writer | None = None) -> Plan:
    """Each rank's items into its buckets, in the order torch writes them
    (a bucket's bytes items, then its tensors)."""
    out = Plan(tensors, torch, writer)
    for rank in range(world):
        items = [(s, k) for s in tensors for k, c in enumerate(s.chunks) if c.writer == rank]
        bins: list[list[tuple[Sharded, int]]] = [[] for _ in range(buckets)]
        sizes = [0] * buckets
        for i, item in enumerate(x for x in items if x[0].dtype is None):
            bins[i % buckets].append(item)
        for item in sorted((x for x in items if x[0].dtype is not None),
                           key=lambda x: -chunk_bytes(x[0], x[0].chunks[x[1]])):
            at = min(range(buckets), key=lambda b: sizes[b])
            bins[at].append(item)
            sizes[at] += chunk_bytes(item[0], item[0].chunks[item[1]])
        for number, bucket in enumerate(b for b in bins if b):
            _place(out, f"__{rank}_{number}{SUFFIX}", bucket)
    return out


def _place(out: Plan, name: str, bucket: list[tuple[Sharded, int]]) -> None:
    offset = 0
    ordered = [x for x in bucket if x[0].dtype is None] + [x for x in bucket if x[0].dtype is not None]
    for s, k in ordered:
        length = item_length(s, s.chunks[k], out.torch)
        out.places[(s.key, k)] = (name, offset, length)
        offset += length
    out.files[name] = offset


# -- the pickle ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Global:
    """A class or constant of torch's, as pickle names it."""

    module: str
    name: str


@dataclass(frozen=True, eq=False)
class _Instance:
    """An object pickled by copyreg.__newobj__: its class, then its state."""

    cls: _Global
    state: Any


@dataclass(frozen=True, eq=False)
class _Reduced:
    """An object pickled as a call: torch.Size((...)), an Enum member."""

    func: _Global
    args: tuple[Any, ...]


_META = "torch.distributed.checkpoint.metadata"
_FS = "torch.distributed.checkpoint.filesystem"
# One object per name, as the real classes are: pickle's memo then writes
# each once and refers back to it, as pickle.dump does.
_NAMES = {n: _Global(_META, n) for n in ("Metadata", "TensorStorageMetadata", "TensorProperties",
                                         "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
                                         "_MEM_FORMAT_ENCODING")}
_STORAGE_INFO = _Global(_FS, "_StorageInfo")
_STORAGE_META = _Global(_META, "StorageMeta")
_POSIX_PATH = _Global("pathlib", "PosixPath")
DCP_VERSION = "1.0.0"  # filesystem.py CURRENT_DCP_VERSION at 2.9.1
_SIZE = _Global("torch", "Size")
_TORCH = {n: _Global("torch", n) for n in ("bfloat16", "float16", "float32", "strided")}


class _Writer(pickle._Pickler):  # type: ignore[name-defined,misc]
    """pickle's own (pure Python) pickler, which also writes torch's classes
    by name without importing them."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _global(self, obj: _Global) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def _instance(self, obj: _Instance) -> None:
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if obj.state is not None:  # an object with an empty __dict__ has no state to build
            self.save(obj.state)
            self.write(pickle.BUILD)

    def _reduced(self, obj: _Reduced) -> None:
        self.save(obj.func)
        self.save(obj.args)
        self.write(pickle.REDUCE)
        self.memoize(obj)

    dispatch[_Global] = _global
    dispatch[_Instance] = _instance
    dispatch[_Reduced] = _reduced


def _size(dims: tuple[int, ...]) -> _Reduced:
    return _Reduced(_SIZE, (tuple(dims),))


def _metadata(p: Plan) -> _Instance:
    """Metadata as FileSystemWriter.finish pickles it."""
    contiguous = _Reduced(_NAMES["_MEM_FORMAT_ENCODING"], (CONTIGUOUS,))
    entries: dict[str, Any] = {}
    storage: dict[Any, Any] = {}
    for s in p.tensors:
        if s.dtype is None:
            entries[s.key] = _Instance(_NAMES["BytesStorageMetadata"], None)
        else:
            encoded = (_TORCH[s.dtype], _TORCH["strided"], False, contiguous, False)  # its __getstate__
            props = _Instance(_NAMES["TensorProperties"], encoded)
            chunks = [_Instance(_NAMES["ChunkStorageMetadata"], {"offsets": _size(c.offsets),
                                                                 "sizes": _size(c.sizes)}) for c in s.chunks]
            entries[s.key] = _Instance(_NAMES["TensorStorageMetadata"],
                                       {"properties": props, "size": _size(s.shape), "chunks": chunks})
        for k, c in enumerate(s.chunks):
            name, offset, length = p.places[(s.key, k)]
            # create_default_global_save_plan's rewrite_index_hints: a chunk's place in its tensor's list
            index = {"fqn": s.key, "offset": None if s.dtype is None else _size(c.offsets),
                     "index": None if s.dtype is None else k}
            info = {"relative_path": name, "offset": offset, "length": length}
            storage[_Instance(_NAMES["MetadataIndex"], index)] = _Instance(_STORAGE_INFO, info)
    planner = p.writer.mappings if p.writer else {s.key: (s.key,) for s in p.tensors}
    state: dict[str, Any] = {"state_dict_metadata": entries, "planner_data": planner, "storage_data": storage}
    release = tuple(int(x) for x in p.torch.split(".")[:2])
    if release >= (2, 4):  # Megatron's planner is set up without the writer's StorageMeta
        state["storage_meta"] = _storage_meta(p.writer, release) if p.writer else None
    if release >= (2, 9):
        state["version"] = DCP_VERSION if p.writer else None
    if p.writer is None:
        state["mcore_data"] = {s.key: {} for s in p.tensors if s.dtype is not None}
    return _Instance(_NAMES["Metadata"], state)


def _storage_meta(w: Writer, release: tuple[int, ...]) -> _Instance:
    """FileSystemWriter.storage_meta(): StorageMeta(checkpoint_id=self.path
    (a PosixPath: PurePath.__reduce__, its class called with its parts),
    save_id, load_id=None; 2.9 adds `modules`, empty)."""
    parts = tuple(PurePosixPath(w.checkpoint_id).parts)
    state: dict[str, Any] = {"checkpoint_id": _Reduced(_POSIX_PATH, parts), "save_id": w.save_id,
                             "load_id": None}
    if release >= (2, 9):
        state["modules"] = []
    return _Instance(_STORAGE_META, state)
