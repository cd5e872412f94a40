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
import math
import struct
from dataclasses import dataclass

from fakerun.world.tensors import Tensor, max_shard, split

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


def shards(tensors: tuple[Tensor, ...], transformers: str) -> list[Shard]:
    """The files save_pretrained of the pinned transformers splits them into
    (world/tensors.py `split`, by that version's default max_shard_size)."""
    return [Shard(name, group) for name, group in split(tensors, max_shard(transformers)[1])]


def index(parts: list[Shard], transformers: str) -> bytes:
    """model.safetensors.index.json: total_size is the tensors' bytes (not
    the files', which add headers), written with sort_keys as save_pretrained
    does (modeling_utils.py at v4.46.3); 5.x adds the model's parameter count
    (`{"total_parameters": self.num_parameters(), **state_dict_split.metadata}`,
    modeling_utils.py at v5.0.0)."""
    metadata: dict[str, int] = {"total_size": sum(t.nbytes for s in parts for t in s.tensors)}
    if int(transformers.split(".")[0]) >= 5:
        metadata["total_parameters"] = sum(math.prod(t.shape) for s in parts for t in s.tensors)
    body = {"metadata": metadata, "weight_map": {t.name: s.name for s in parts for t in s.tensors}}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
