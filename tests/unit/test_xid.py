"""The Xid scenarios (gpu-fallen-off-bus, ecc-dbe, ecc-contained,
ecc-uncontained): the kernel driver's lines per driver branch, checked
against NVIDIA/open-gpu-kernel-modules' krcReportXid (kernel_rc.c at tags
535.161.08, 550.127.05 and 570.133.20: "pid=%s, name=%s, " with
"'<unknown>'"/"<unknown>" for an Xid no channel owns, left out from 570 on),
osHandleGpuLost (osinit.c: 79's "GPU has fallen off the bus." and the
NV_DEV_PRINTF lines after it), and the GPUs each fault can happen on; the
hardware condition; the kern.log view; nvidia-smi's view of the GPU."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.cli.main import to_config
from fakerun.cli.parser import build_parser
from fakerun.config.options import Fault, RunConfig
from fakerun.errors import UsageError
from fakerun.render.kernlog import KernelLog, syslog_line
from fakerun.smi import GpuRow, SmiStateSink, Snapshot, nvsmi
from fakerun.smi.device import Device
from fakerun.smi.report import report
from fakerun.smi.table import table
from fakerun.world import catalog, hardware, scenarios, xid

H100, V100, L40S = "NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-32GB", "NVIDIA L40S"


def config(gpu: str, scenario: str, *more: str) -> RunConfig:
    argv = ["--nproc", "2", "--gpu", gpu, "--scenario", scenario, "--seed", "3", "--fail-step", "4", *more]
    return to_config(build_parser().parse_args(argv), environ={})


def report_lines(c: RunConfig, driver: str | None = None, pid: int = 4242) -> list[str]:
    ident = c.identity
    if driver is not None:
        ident = dataclasses.replace(ident, versions=dataclasses.replace(ident.versions, driver=driver))
    return [text for _, text in xid.Report(ident, c.fault.rank, int(c.fault.param("code"))).lines(pid)]


def gpu(name: str) -> catalog.Gpu:
    return next(g for g in catalog.gpus() if g.name == name)


# -- the catalog and the GPUs each fault can happen on --------------------------
def test_the_four_xid_scenarios_are_in_the_catalog():
    found = {n: (s.fault, s.params.get("code"), s.recurs) for n, s in scenarios.catalog().items()
             if s.fault == xid.KIND}
    assert found == {"gpu-fallen-off-bus": ("xid", 79.0, True), "ecc-dbe": ("xid", 48.0, False),
                     "ecc-contained": ("xid", 94.0, False), "ecc-uncontained": ("xid", 95.0, True)}


@pytest.mark.parametrize(("code", "name", "why"), [
    (79, "AMD Instinct MI300X", "an Xid is NVIDIA's driver's report"),
    (48, "NVIDIA GeForce RTX 4090", "has no ECC memory"),
    (94, V100, "only A100 and Hopper GPUs have"),
    (95, L40S, "only A100 and Hopper GPUs have"),
    (13, H100, "Xid 13 is not one fakerun simulates"),
])
def test_a_gpu_the_fault_cannot_happen_on_is_refused(code, name, why):
    assert why in xid.refusal(code, gpu(name))


@pytest.mark.parametrize(("code", "name"), [(79, "NVIDIA GeForce RTX 4090"), (48, V100), (48, L40S),
                                            (94, "NVIDIA A100-SXM4-80GB"), (95, "NVIDIA H100 PCIe")])
def test_a_gpu_the_fault_can_happen_on_is_not(code, name):
    assert xid.refusal(code, gpu(name)) is None


def test_the_refusal_is_one_usage_line():
    with pytest.raises(UsageError, match=r"^--scenario: Xid 94 comes from Ampere's error containment"):
        config(V100, "ecc-contained")


# -- the kernel's lines ------------------------------------------------------------
@pytest.mark.parametrize("driver", ["535.161.08", "550.127.05"])
def test_xid_79_has_no_process_before_570(driver):
    c = config(H100, "gpu-fallen-off-bus")
    bus = c.identity.gpu.bus_id(1)
    lines = report_lines(c, driver)
    assert lines[1] == f"NVRM: Xid (PCI:0000:{bus}:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    assert lines[2] == f"NVRM: GPU 0000:{bus}:00.0: GPU has fallen off the bus."
    assert lines[3].startswith(f"NVRM: GPU 0000:{bus}:00.0: GPU serial number is 1")


def test_xid_79_on_570_leaves_the_process_out():
    c = config(H100, "gpu-fallen-off-bus")
    bus = c.identity.gpu.bus_id(1)
    assert report_lines(c, "570.133.20")[1] == f"NVRM: Xid (PCI:0000:{bus}:00): 79, GPU has fallen off the bus."


def test_a_contained_error_names_the_rank_and_its_row_remap():
    c = config(H100, "ecc-contained")
    lines = report_lines(c, "550.127.05")
    codes = [int(line.split("): ")[1].split(",")[0]) for line in lines[1:]]
    assert codes == [48, 94, 63]
    assert ": 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected" in lines[1]
    assert ": 94, pid=4242, name=pt_main_thread, Contained: FB DED (0x" in lines[2]
    assert lines[2].endswith("RST: No, D-RST: No")
    assert lines[3].endswith(": 63, pid=4242, name=pt_main_thread, Row Remapper: New row marked for remapping, "
                             "reset gpu to activate.")
    # 550 prints the DRAM location as "(0x%x,0x%x)", 570 as "(0x%x, 0x%x)"
    assert re.search(r"FB DED \(0x[0-9a-f]+,0x[0-9a-f]+\)\. physAddr: 0x[0-9a-f]{8,} RST", lines[2])
    assert re.search(r"FB DED \(0x[0-9a-f]+, 0x[0-9a-f]+\)\. physAddr", report_lines(c, "570.133.20")[2])


def test_an_uncontained_error_needs_a_reset():
    assert report_lines(config(H100, "ecc-uncontained"))[2].endswith("RST: Yes, D-RST: No")


def test_volta_retires_pages_instead_of_remapping_rows():
    assert [line.split("): ")[1][:2] for line in report_lines(config(V100, "ecc-dbe"))[1:]] == ["48"]


def test_the_lines_name_the_gpu_as_nvidia_smi_does():
    """The bus id and the UUID of the driver's lines are those `fakerun smi` shows for the GPU."""
    c = config(H100, "ecc-contained")
    sink = SmiStateSink(Path(os.devnull).parent / "unused", "python3", interval=1e9)
    sink.ident = c.identity
    row = sink._row(1)
    device = Device(Snapshot(time=0, run_id="r", driver="535.183.01", cuda="12.2", process="p", step=0,
                             gpus=[row], seed=c.identity.seed), row)
    lines = report_lines(c)
    assert lines[0] == f"NVRM: GPU at PCI:0000:{row.bus_id[9:11].lower()}:00: {device.uuid}"
    assert row.bus_id == f"00000000:{c.identity.gpu.bus_id(1).upper()}:00.0"


# -- the hardware condition -----------------------------------------------------------
def test_the_condition_is_the_fault_from_its_step_on_for_its_gpu_only():
    c = config(H100, "ecc-contained")
    assert hardware.condition(c.identity, c.fault, 1, 3) == hardware.HEALTHY
    assert hardware.condition(c.identity, c.fault, 1, 4) == hardware.Condition(xid=63)
    assert hardware.condition(c.identity, c.fault, 0, 9) == hardware.HEALTHY
    lost = config(H100, "gpu-fallen-off-bus")
    assert hardware.condition(lost.identity, lost.fault, 1, 4) == hardware.Condition(xid=79, lost=True)


def test_a_lost_gpu_stays_lost_in_the_next_attempt_from_its_first_step():
    lost = Fault("xid", 1, 6, (("code", 79.0),), recurs=True)
    assert lost.next_attempt(resumed=3) == dataclasses.replace(lost, step=4)
    assert Fault("xid", 1, 6, (("code", 94.0),)).next_attempt(3) is None
    assert Fault("oom", 1, 6, recurs=True).next_attempt(3) == Fault("oom", 1, 6, recurs=True)


# -- kern.log ---------------------------------------------------------------------------
def test_a_kern_log_line_is_rsyslogs_traditional_format():
    when = datetime(2024, 12, 2, 10, 43, 35, tzinfo=UTC)
    # NVIDIA/gpu-operator#1146: "Dec  2 10:43:35 worker4 kernel: [240314.528856] NVRM: Xid ..."
    assert syslog_line(when, "worker4.cluster.local", 240314.528856, "NVRM: x") == \
        "Dec  2 10:43:35 worker4 kernel: [240314.528856] NVRM: x\n"
    assert syslog_line(when, "n", 612.44, "y") == "Dec  2 10:43:35 n kernel: [  612.440000] y\n"


def test_the_kernel_log_holds_its_nodes_lines_from_its_uptime(tmp_path):
    c = config(H100, "ecc-contained", "--start-time", "2026-01-30T14:23:15")
    sink = KernelLog(tmp_path, 0, UTC)
    start = datetime(2026, 1, 30, 14, 23, 15, tzinfo=UTC).timestamp()
    sink.event(ev.RunIdentity(c.identity))
    sink.event(dataclasses.replace(_started(), time=start))
    sink.event(ev.KernelMessage(1, "another node's", start + 5))
    assert not any(tmp_path.iterdir())  # a node whose kernel said nothing has no file
    sink.event(ev.KernelMessage(0, "NVRM: one", start + 61.5))
    sink.event(ev.KernelMessage(0, "NVRM: two", start + 61.500004))
    sink.close()
    host = c.identity.hosts[0].split(".")[0]
    lines = (tmp_path / host / "kern.log").read_text().splitlines()
    up = hardware.uptime_at_start(c.identity, 0) + 61.5
    assert lines[0] == f"Jan 30 14:24:16 {host} kernel: [{int(up):5d}.{round(up * 1e6) % 10**6:06d}] NVRM: one"
    assert lines[1].endswith("NVRM: two") and len(lines) == 2


def _started() -> ev.RunStarted:
    return ev.RunStarted("r", 2, 1, 2, 0, 3, "train.py", [], 10, "127.0.0.1", 29500, 1, 0, 0.0)


# -- nvidia-smi ------------------------------------------------------------------------
def smi_snap(name: str, xid_code: int = 0, lost: bool = False) -> Snapshot:
    rows = [GpuRow(rank=i, node=0, index=i, host="node001", name=name, bus_id=f"00000000:{b}:00.0", util=97,
                   mem_used_mib=30000, mem_total_mib=81559, temp_c=70, power_w=650, power_cap_w=700,
                   pid=100 + i, xid=xid_code if i == 1 else 0, lost=lost and i == 1)
            for i, b in enumerate(["18", "2A"])]
    return Snapshot(time=1e9, run_id="r", driver="535.183.01", cuda="12.2", process="/usr/bin/python3", step=3,
                    gpus=rows, seed=3)


def test_after_an_ecc_error_the_report_counts_it_and_a_row_remap_is_pending():
    devices = [Device(smi_snap(H100, 63), row) for row in smi_snap(H100, 63).gpus]
    text = "\n".join(report(devices, 2, []))
    healthy, faulty = text.split("GPU 00000000:2A:00.0")
    assert re.findall(r"DRAM Uncorrectable +: (\d)", healthy) == ["0", "0"]
    assert re.findall(r"DRAM Uncorrectable +: (\d)", faulty) == ["1", "1"]  # volatile and aggregate
    assert re.search(r"Remapped Rows\n.*\n +Uncorrectable Error +: 1\n +Pending +: Yes\n", faulty)
    lines = table(smi_snap(H100, 63))
    assert [line.split("|")[-2].strip() for line in lines if "00000000:" in line] == ["0", "1"]


def test_volta_blacklists_the_page_instead():
    shot = smi_snap(V100, 48)
    text = "\n".join(report([Device(shot, shot.gpus[1])], 1, []))
    assert re.search(r"Double Bit ECC +: 1\n +Pending Page Blacklist +: Yes\n", text)


def test_a_lost_gpu_stops_nvidia_smi_with_its_legacy_bus_id():
    for argv in ([], ["-q"], ["--query-gpu=index", "--format=csv"], ["-L"]):
        out = io.StringIO()
        code = nvsmi.main(argv, out, io.StringIO(), lambda: smi_snap(H100, 79, lost=True), tool=True)
        assert (code, out.getvalue()) == (255, "Unable to determine the device handle for GPU0000:2A:00.0: "
                                               "Unknown Error\n")


def test_the_live_table_shows_a_lost_gpus_readings_as_err_in_its_columns():
    for driver in ("535.183.01", "550.127.05"):
        lines = table(dataclasses.replace(smi_snap(H100, 79, lost=True), driver=driver))
        width = len(lines[1])
        healthy, lost = (lines[i + 1] for i, line in enumerate(lines) if "00000000:" in line)
        assert lost.count("ERR!") == 8 and len(lost) == width
        assert [i for i, ch in enumerate(lost) if ch == "|"] == [i for i, ch in enumerate(healthy) if ch == "|"]
