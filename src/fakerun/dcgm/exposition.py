"""The scrape's text, byte for byte as dcgm-exporter 3.3.8-3.6.0 writes it
(pkg/dcgmexporter/pipeline.go migMetricsFormat, a Go text/template):

    # HELP <name> <help>
    # TYPE <name> <type>
    <name>{gpu="0",UUID="GPU-…",pci_bus_id="00000000:18:00.0",device="nvidia0",
           modelName="…",Hostname="…",<labels>,<attributes>} <value>

per counter in field-id order, a line per GPU. <labels> are the label-typed
counters (DCGM_FI_DRIVER_VERSION) and <attributes> the XID's err_code/err_msg
and the pod mapper's container/namespace/pod, each map in Go's sorted key
order. A value DCGM holds blank (a field the board lacks, a GPU that fell off
the bus) is no line at all (gpu_collector.go ToMetric skips SkipDCGMValue),
and a counter no GPU has a line for is not in the template's map: no HELP
and TYPE lines either."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fakerun.dcgm.counters import Counter, Exporter, xid_text

XID = "DCGM_FI_DEV_XID_ERRORS"


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one collection: who it is and what each counter read."""

    gpu: int  # its index on the node (DCGM's gpu id, nvidia-smi's index)
    uuid: str
    pci_bus_id: str  # "00000000:18:00.0"
    model: str
    hostname: str
    values: dict[str, float | None]  # by counter name; None (or absent): blank, no line
    labels: dict[str, str] = field(default_factory=dict)  # label-typed counters by name
    pod: dict[str, str] = field(default_factory=dict)  # container, namespace, pod: the pod mapper's


def render(exporter: Exporter, gpus: Iterable[GpuSample]) -> str:
    gpus = list(gpus)
    out: list[str] = []
    for counter in exporter.counters:
        lines = [_line(counter, g) for g in gpus if g.values.get(counter.name) is not None]
        if lines:
            out.append(f"# HELP {counter.name} {counter.help}\n# TYPE {counter.name} {counter.prom_type}\n")
            out.extend(lines)
    return "".join(out)


def _line(counter: Counter, g: GpuSample) -> str:
    value = g.values[counter.name]
    assert value is not None
    attributes = dict(g.pod)
    if counter.name == XID:  # the last Xid's code and its text (ToMetric's attrs)
        attributes |= {"err_code": str(int(value)), "err_msg": xid_text(int(value))}
    extra = "".join(f',{k}="{v}"' for k, v in [*sorted(g.labels.items()), *sorted(attributes.items())])
    return (f'{counter.name}{{gpu="{g.gpu}",UUID="{g.uuid}",pci_bus_id="{g.pci_bus_id}",'
            f'device="nvidia{g.gpu}",modelName="{g.model}",Hostname="{g.hostname}"{extra}}} '
            f"{_value(counter, value)}\n")


def _value(counter: Counter, value: float) -> str:
    """gpu_collector.go ToString: an int64 as %d, a double as Go's %f (six decimals)."""
    return f"{value:f}" if counter.kind == "d" else str(int(value))
