"""Model weights as save_pretrained writes them: the state dict split into
shards, each a safetensors file, and the index that maps tensors to shards.

A shard's header is exactly the real one; its data (zeros of the true size)
is left out, or (sparse) left as a hole of the true size. The format
(safetensors' docs, "Format"; src/tensor.rs `prepare`): 8 bytes of header
length, little-endian; the header, JSON with no spaces, `__metadata__` first
and then the tensors sorted by dtype alignment and name, each as `dtype`,
`shape`, `data_offsets` into the data; padded with spaces to a multiple of 8."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from fakerun.checkpoint.tensors import Tensor

# save_pretrained's default max_shard_size "5GB" (transformers modeling_utils.py
# at v4.46.3), parsed by huggingface_hub's parse_size_to_int as 5 * 10**9.
MAX_SHARD_BYTES = 5 * 10**9
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
METADATA = {"format": "pt"}  # what save_pretrained passes to safe_save_file


@dataclass(frozen=True)
class Shard:
    name: str
    tensors: tuple[Tensor, ...]

    def header(self) -> bytes:
        """The file's first bytes: length and header, data offsets counted
        from the end of the header."""
        body: dict[str, object] = {"__metadata__": METADATA}
        offset = 0
        for t in sorted(self.tensors, key=lambda t: t.name):  # one dtype: the name decides
            body[t.name] = {"dtype": t.dtype, "shape": list(t.shape),
                            "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        text = json.dumps(body, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text

    def size(self) -> int:
        """The whole file's size: header and data."""
        return len(self.header()) + sum(t.nbytes for t in self.tensors)


def shards(tensors: list[Tensor], max_bytes: int = MAX_SHARD_BYTES) -> list[Shard]:
    """huggingface_hub's split_state_dict_into_shards_factory (serialization/
    _base.py): tensors in state-dict order fill a shard until the next would
    pass `max_bytes`; a tensor larger than that gets a shard of its own. One
    shard is `model.safetensors`; more are model-0000k-of-0000n.safetensors."""
    groups: list[list[Tensor]] = []
    current: list[Tensor] = []
    size = 0
    for t in tensors:
        if t.nbytes > max_bytes:
            groups.append([t])
            continue
        if current and size + t.nbytes > max_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.nbytes
    if current:
        groups.append(current)
    if len(groups) == 1:
        return [Shard(SINGLE, tuple(groups[0]))]
    n = len(groups)
    return [Shard(f"model-{k:05d}-of-{n:05d}.safetensors", tuple(g)) for k, g in enumerate(groups, 1)]


def index(parts: list[Shard]) -> bytes:
    """model.safetensors.index.json: total_size is the tensors' bytes (not
    the files', which add headers), written with sort_keys as save_pretrained
    does (modeling_utils.py at v4.46.3)."""
    body = {"metadata": {"total_size": sum(t.nbytes for s in parts for t in s.tensors)},
            "weight_map": {t.name: s.name for s in parts for t in s.tensors}}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
