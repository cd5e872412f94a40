"""Files in torch.save's format (torch/serialization.py `_save`, zip
serialization, the default since torch 1.6): a zip archive of stored entries
under a folder named after the file, `data.pkl` (the object, pickle protocol
2), `byteorder`, `version` and `.data/serialization_id`; each tensor would be
a `data/<key>` entry that the pickle points at.

The objects pickled here are plain data (dicts, lists, tuples, numbers,
strings, None): their pickles hold no GLOBAL, REDUCE or BUILD opcode, so
loading one (pickle.load, torch.load with or without weights_only) runs
nothing and imports nothing. Tensors cannot be written that way (a tensor is
rebuilt by a call to torch._utils._rebuild_tensor_v2): what would be one is
left out, and the files say only what plain data can.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import PurePosixPath
from typing import Any

PROTOCOL = 2  # torch.serialization.DEFAULT_PROTOCOL
VERSION = b"3\n"  # the zip serialization's record version (caffe2/serialize/inline_container.h)
STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the bytes repeat from run to run


def archive(file_name: str, obj: Any, serialization_id: str) -> bytes:
    """torch.save(obj, file_name)'s bytes, for plain `obj`."""
    folder = PurePosixPath(file_name).stem
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in (("data.pkl", pickle.dumps(obj, protocol=PROTOCOL)), ("byteorder", b"little"),
                           ("version", VERSION), (".data/serialization_id", serialization_id.encode())):
            zf.writestr(zipfile.ZipInfo(f"{folder}/{name}", STAMP), data)
    return buffer.getvalue()
