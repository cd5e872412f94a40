"""The zip container of every torch.save file, byte for byte as the pinned
torch writes it: caffe2/serialize/inline_container.cc PyTorchStreamWriter
over miniz (third_party/miniz-3.0.2/miniz.c `mz_zip_writer_add_mem_ex_v2`,
`mz_zip_writer_finalize_archive`), initialised with MZ_ZIP_FLAG_WRITE_ZIP64:

- each record: a local header with no time, no CRC and no sizes (flags
  0x0808: sizes in a data descriptor, UTF-8 name), the name `<folder>/<record>`,
  a zip64 extra field where the record or its offset passes 4 GiB, then
  torch's own "FB" extra field of 'Z's padding the data to a 64-byte
  boundary (getPadding; config.save.storage_alignment's default 64 from
  torch 2.6), the data, and a data descriptor (16 bytes, 24 with zip64);
- the central directory, a zip64 end record and locator, the end record.

torch.serialization `_save` decides the records and their order per
version (torch/serialization.py at 2.3.1, 2.4.1, 2.5.1 and 2.9.1, checked
against real torch.save files in tests/fixtures/torchsave/): `data.pkl`,
from 2.6 `.format_version` "1" and `.storage_alignment` "64", `byteorder`,
each storage's `data/<key>`, then writeEndOfFile's `version` "3" and
`.data/serialization_id`.

A storage's record may be left out (the file shorter than the real one) or
be a hole of its true size (`Record.size`): its bytes are zeros the file
system need not store, and its CRC-32 is that of so many zeros (zlib's
crc32_combine arithmetic), so a reader that checks it finds it right.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from fakerun.checkpoint.store import Sparse

ALIGNMENT = 64  # caffe2's kFieldAlignment; torch.utils.serialization.config.save.storage_alignment from 2.6
VERSION = b"3\n"  # kProducedFileFormatVersion: the `version` record
FORMAT_VERSION_FROM = (2, 6)  # 2.5.1's _save writes no .format_version; 2.9.1's does
U32 = 0xFFFFFFFF
UTF8, DESCRIPTOR = 0x0800, 0x0008  # MZ_ZIP_GENERAL_PURPOSE_BIT_FLAG_UTF8, MZ_ZIP_LDH_BIT_FLAG_HAS_LOCATOR
CRC_POLY = 0xEDB88320  # CRC-32's polynomial, reflected


@dataclass(frozen=True)
class Record:
    """One record: its bytes, or (`size`) that many bytes of tensor data
    written as a hole."""

    name: str
    data: bytes = b""
    size: int | None = None

    @property
    def length(self) -> int:
        return len(self.data) if self.size is None else self.size

    @property
    def crc(self) -> int:
        return zlib.crc32(self.data) if self.size is None else zeros_crc(self.size)


def records(torch_version: str, pickle: bytes, serialization_id: str,
            storages: Sequence[Record] = ()) -> list[Record]:
    """torch.save's records in the pinned torch's order, `storages` (the
    `data/<key>` records, if any are kept) after `byteorder`."""
    out = [Record("data.pkl", pickle)]
    if parts(torch_version) >= FORMAT_VERSION_FROM:
        out += [Record(".format_version", b"1"), Record(".storage_alignment", str(ALIGNMENT).encode())]
    return [*out, Record("byteorder", b"little"), *storages, Record("version", VERSION),
            Record(".data/serialization_id", serialization_id.encode())]


def archive(folder: str, written: Sequence[Record]) -> bytes:
    """The file's bytes, every record held (none a hole)."""
    pieces, size = layout(folder, written)
    assert len(pieces) == 1 and len(pieces[0][1]) == size, "a hole has no bytes to return"
    return pieces[0][1]


def sparse(folder: str, written: Sequence[Record]) -> Sparse:
    """The file with its storages' records as holes of their true size, and,
    where the file system keeps no holes, the same file less those records."""
    pieces, size = layout(folder, written)
    return Sparse(tuple(pieces), size, archive(folder, [r for r in written if r.size is None]))


def layout(folder: str, written: Sequence[Record]) -> tuple[list[tuple[int, bytes]], int]:
    """The file as (offset, bytes) pieces, holes between them, and its size."""
    out = _Out()
    central = bytearray()
    for record in written:
        central += _record(out, f"{folder}/{record.name}".encode(), record)
    at = out.pos
    out.write(bytes(central))
    n, end64 = len(written), out.pos
    out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x002D, 0, 0, n, n, len(central), at))
    out.write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                          min(len(central), U32), min(at, U32), 0))
    return out.pieces(), out.pos


class _Out:
    """A file being written: contiguous bytes, and holes skipped over."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, bytearray]] = [(0, bytearray())]
        self.pos = 0

    def write(self, data: bytes) -> None:
        self.runs[-1][1].extend(data)
        self.pos += len(data)

    def skip(self, size: int) -> None:
        self.pos += size
        self.runs.append((self.pos, bytearray()))

    def pieces(self) -> list[tuple[int, bytes]]:
        return [(at, bytes(run)) for at, run in self.runs if run or at == 0]


def _record(out: _Out, name: bytes, record: Record) -> bytes:
    """Writes one record (mz_zip_writer_add_mem_ex_v2, stored, zip64 mode);
    returns its central directory entry."""
    at, size, crc = out.pos, record.length, record.crc
    big, far = size >= U32, at >= U32
    flags = UTF8 | (DESCRIPTOR if size else 0)
    # The local zip64 field is made before the data is written: its compressed size is still 0.
    local64 = _zip64(size if big else None, 0 if big else None, at if far else None) if big or far else b""
    pad = _padding(at, len(name), size)
    out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, flags, 0, 0, 0, 0, 0, 0, len(name),
                          len(local64) + len(pad)) + name + local64 + pad)
    if record.size is None:
        out.write(record.data)
    else:
        out.skip(size)
    if size:
        sizes = struct.pack("<QQ", size, size) if local64 else struct.pack("<II", size, size)
        out.write(struct.pack("<II", 0x08074B50, crc) + sizes)
    central64 = _zip64(size if big else None, size if big else None, at if far else None) if local64 else b""
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, flags, 0, 0, 0, crc, min(size, U32),
                       min(size, U32), len(name), len(central64), 0, 0, 0, 0, min(at, U32)) + name + central64


def _zip64(uncompressed: int | None, compressed: int | None, offset: int | None) -> bytes:
    """mz_zip_writer_create_zip64_extra_data: the values given, in this order."""
    values = [v for v in (uncompressed, compressed, offset) if v is not None]
    return struct.pack(f"<HH{len(values)}Q", 0x0001, 8 * len(values), *values)


def _padding(cursor: int, name_size: int, size: int) -> bytes:
    """inline_container.cc getPadding: the "FB" field that puts the data on
    the alignment, counting the zip64 field miniz puts before it."""
    start = cursor + 30 + name_size + 4
    if size >= U32 or cursor >= U32:
        start += 4 + (16 if size >= U32 else 0) + (8 if cursor >= U32 else 0)
    padding = -start % ALIGNMENT
    return b"FB" + struct.pack("<H", padding) + b"Z" * padding


def _multiply(a: int, b: int) -> int:
    """a x b modulo CRC-32's polynomial, reflected (zlib crc32.c multmodp)."""
    product, bit = 0, 1 << 31
    while bit:
        if a & bit:
            product ^= b
        bit >>= 1
        b = (b >> 1) ^ CRC_POLY if b & 1 else b >> 1
    return product


def zeros_crc(size: int) -> int:
    """zlib.crc32 of `size` zero bytes, without them: the register's
    0xFFFFFFFF times x^(8 size) (zlib's x2nmodp by squaring), less the final xor."""
    power, square, n = 1 << 31, 1 << 30, size * 8  # x^0; x^1
    while n:
        if n & 1:
            power = _multiply(power, square)
        square = _multiply(square, square)
        n >>= 1
    return _multiply(power, U32) ^ U32


def parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".") if p.isdigit())
