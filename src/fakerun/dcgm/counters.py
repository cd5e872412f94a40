"""The counters dcgm-exporter serves: its pinned counters file (data/, as
the release ships it) read as its parser reads it, each with DCGM's field id
and value type (data/dcgm_exporter.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fakerun import texts

UNKNOWN_XID = "Unknown Error"  # pkg/dcgmexporter/xid_collector.go unknownErr


@dataclass(frozen=True)
class Counter:
    field_id: int
    name: str
    prom_type: str  # gauge, counter, or label (a label on every other metric)
    help: str
    kind: str  # DCGM's value type: i int64, d double, s string


@dataclass(frozen=True)
class Exporter:
    version: str
    counters: tuple[Counter, ...]  # the metrics, by field id: the scrape's order
    labels: tuple[Counter, ...]  # the label-typed counters (DCGM_FI_DRIVER_VERSION)
    interval_s: float  # --collect-interval
    default_port: int


def parse(text: str, fields: dict[str, list[Any]]) -> list[Counter]:
    """A counters file as pkg/dcgmexporter/parser.go reads it (3.3.8-3.6.0):
    '#' lines are comments, each field trimmed of spaces, three fields a
    line; a field DCGM does not know is an error (the exporter exits)."""
    counters = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        record = [part.strip(" ") for part in line.split(",")]
        if len(record) != 3:
            raise ValueError(f"counters line {number}: expected 3 fields, got {len(record)}")
        name, prom_type, help_text = record
        if name not in fields:
            raise ValueError(f"counters line {number}: no DCGM field {name!r}")
        field_id, kind = fields[name]
        counters.append(Counter(int(field_id), name, prom_type, help_text, str(kind)))
    return counters


@cache
def pinned() -> Exporter:
    data = texts.load("dcgm_exporter")
    text = resources.files("fakerun").joinpath("data", data["counters"]).read_text(encoding="utf-8")
    every = sorted(parse(text, data["fields"]), key=lambda c: c.field_id)
    return Exporter(data["version"], tuple(c for c in every if c.prom_type != "label"),
                    tuple(c for c in every if c.prom_type == "label"),
                    data["collect_interval_ms"] / 1000.0, int(data["default_port"]))


def xid_text(code: int) -> str:
    """The err_msg label beside an Xid code."""
    return str(texts.load("dcgm_exporter")["xid"].get(str(code), UNKNOWN_XID))
