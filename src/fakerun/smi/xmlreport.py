"""`nvidia-smi -q -x [-i ...]`: the NVSMI LOG report as XML. One model of
the device, two renderings: the values are smi/report.py's (the text
report's, the same call), the elements data/nvidia_smi.toml [xml]'s, laid
out and chosen (PIDS, T.Limit, remapped rows) by the same expansion. No -d:
nvidia-smi's -d "doesn't work with -u or -x flags" (its -h)."""

from __future__ import annotations

from functools import cache
from html import escape
from typing import Any

from fakerun import texts
from fakerun.smi import report
from fakerun.smi.device import Device

INDENT = "    "  # a level of the templates; nvidia-smi indents with a tab a level
GPU_DEPTH = 2  # <nvidia_smi_log> / <gpu> / the GPU's own elements


def xml_report(devices: list[Device], count: int) -> list[str]:
    data = _data()
    lines = [t.format(**_escaped(report.header(devices, count))) for t in data["head"]]
    for d in devices:
        found = _escaped(_xml_values(d))
        lines.append(data["gpu"].format(**found))
        lines.extend(_tabbed(t.format(**found)) for t in report.templates(data, d, []))
        lines.append(data["gpu_end"])
    return lines + list(data["tail"])


def _xml_values(d: Device) -> dict[str, Any]:
    """The text report's values; ids the text shows as 0x... the XML shows bare."""
    found = report.values(d)
    for key in ("device_id", "subsystem_id"):
        found[f"{key}_hex"] = str(found[key]).removeprefix("0x")
    return found


def _escaped(found: dict[str, Any]) -> dict[str, Any]:
    # &, < and > as xml.sax.saxutils.escape does (which imports urllib.request, http and email)
    return {k: escape(v, quote=False) if isinstance(v, str) else v for k, v in found.items()}


def _tabbed(line: str) -> str:
    body = line.lstrip(" ")
    return "\t" * (GPU_DEPTH + (len(line) - len(body)) // len(INDENT)) + body


@cache
def _data() -> dict[str, Any]:
    return texts.load("nvidia_smi")["xml"]
