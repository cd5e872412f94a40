"""`nvidia-smi -q -x`: the report as XML, against real `nvidia-smi -q -x`
output pasted in public sources:

- XML_530 / XML_550: the 530.30.02 and 550.54.14 captures (GeForce GTX 1070)
  in a Go collector's TestParseGpuNvidia: tab-indented, `<?xml version="1.0" ?>`,
  the nvsmi_device_v12.dtd DOCTYPE, each GPU's elements in order, an empty
  line before `</nvidia_smi_log>`;
- netdata/netdata src/go/plugin/go.d/collector/nvidia_smi/testdata/a100-sxm4-mig.xml
  (an A100-SXM4-40GB: ECC as sram_/dram_ counts, the voltage element);
- 550/555 H100 captures in exporter tests (remapped rows, T.Limit temperatures);
- utkuozdemir/nvidia_gpu_exporter internal/captures/
  linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt: `nvidia-smi -h` ("-d ...
  Doesn't work with -u or -x flags")."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from tests.unit.test_nvidia_smi import A100, run, snap

# XML_530's <gpu> children in order, with the two blocks 535 renamed
# (clocks_throttle_reasons -> clocks_event_reasons, power_readings ->
# gpu_power_readings, as XML_550 has them); supported_clocks is not drawn.
ORDER_530 = [
    "product_name", "product_brand", "product_architecture", "display_mode", "display_active",
    "persistence_mode", "mig_mode", "mig_devices", "accounting_mode", "accounting_mode_buffer_size",
    "driver_model", "serial", "uuid", "minor_number", "vbios_version", "multigpu_board", "board_id",
    "board_part_number", "gpu_part_number", "gpu_fru_part_number", "gpu_module_id", "inforom_version",
    "gpu_operation_mode", "gsp_firmware_version", "gpu_virtualization_mode", "gpu_reset_status", "ibmnpu",
    "pci", "fan_speed", "performance_state", "clocks_event_reasons", "fb_memory_usage", "bar1_memory_usage",
    "compute_mode", "utilization", "encoder_stats", "fbc_stats", "ecc_mode", "ecc_errors", "retired_pages",
    "remapped_rows", "temperature", "supported_gpu_target_temp", "gpu_power_readings", "clocks",
    "applications_clocks", "default_applications_clocks", "deferred_clocks", "max_clocks",
    "max_customer_boost_clocks", "clock_policy", "voltage", "fabric", "processes", "accounted_processes",
]
# What XML_550 adds that the 535 text report also shows.
ADDED_535 = {"addressing_mode", "inforom_bbx_flush", "cc_protected_memory_usage", "module_power_readings"}


def xml(*argv: str, shot=None) -> tuple[str, ET.Element]:
    code, out, _ = run("-q", "-x", *argv, shot=shot)
    assert code == 0
    return out, ET.fromstring(out.encode())


def text(*argv: str, shot=None) -> dict[str, str]:
    """The -q report's "key : value" lines, by indent and key (the first of each)."""
    found: dict[str, str] = {}
    for line in run("-q", *argv, shot=shot)[1].splitlines():
        if " : " in line:
            found.setdefault(line[:42].rstrip(), line[44:])
    return found


def test_the_document_as_nvidia_smi_writes_it():
    out, root = xml()
    lines = out.splitlines()
    assert lines[:3] == ['<?xml version="1.0" ?>', '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">',
                         "<nvidia_smi_log>"]
    assert lines[4:7] == ["\t<driver_version>535.183.01</driver_version>", "\t<cuda_version>12.2</cuda_version>",
                          "\t<attached_gpus>8</attached_gpus>"]
    assert lines[7] == '\t<gpu id="00000000:18:00.0">' and lines[8] == "\t\t<product_name>NVIDIA H100 80GB HBM3</product_name>"
    assert lines[-3:] == ["\t</gpu>", "", "</nvidia_smi_log>"] and out.endswith("</nvidia_smi_log>\n")
    assert "\t\t\t<current_mig>Disabled</current_mig>" in lines and "\t\t\tNone" in lines  # mig_devices
    assert root.tag == "nvidia_smi_log" and root.findtext("timestamp") == text()["Timestamp"]
    assert [g.get("id") for g in root.iter("gpu")] == [f"00000000:{b}:00.0" for b in
                                                       ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]]


def test_element_order_is_the_captures():
    for shot in (None, snap(name=A100, total=40960, cap=400, pids=False, util=0)):
        tags = [child.tag for child in xml(shot=shot)[1].find("gpu")]
        assert [t for t in tags if t not in ADDED_535] == ORDER_530
        assert len(tags) == len(set(tags)) == len(ORDER_530) + len(ADDED_535)


def test_values_are_the_text_reports():
    for shot in (None, snap(name=A100, total=40960, cap=400, pids=False, util=0),
                 snap(name="Tesla V100-SXM2-32GB", total=32768, cap=300)):
        gpu, said = xml("-i", "0", shot=shot)[1].find("gpu"), text("-i", "0", shot=shot)
        pairs = {
            "product_name": "    Product Name", "serial": "    Serial Number", "uuid": "    GPU UUID",
            "vbios_version": "    VBIOS Version", "gpu_module_id": "    Module ID",
            "gsp_firmware_version": "    GSP Firmware Version", "pci/pci_bus_id": "        Bus Id",
            "pci/tx_util": "        Tx Throughput", "fan_speed": "    Fan Speed",
            "performance_state": "    Performance State", "fb_memory_usage/total": "        Total",
            "fb_memory_usage/reserved": "        Reserved", "fb_memory_usage/used": "        Used",
            "fb_memory_usage/free": "        Free", "utilization/gpu_util": "        Gpu",
            "temperature/gpu_temp": "        GPU Current Temp", "temperature/memory_temp": "        Memory Current Temp",
            "gpu_power_readings/power_draw": "        Power Draw",
            "gpu_power_readings/current_power_limit": "        Current Power Limit",
            "gpu_power_readings/min_power_limit": "        Min Power Limit",
        }
        for path, key in pairs.items():
            assert gpu.findtext(path) == said[key], path
        # Keys the text report repeats ("Graphics" under Clocks, Applications Clocks, Voltage).
        report = run("-q", "-i", "0", shot=shot)[1]
        for path in ("clocks/graphics_clock", "voltage/graphics_volt", "applications_clocks/graphics_clock"):
            assert f"        Graphics                          : {gpu.findtext(path)}" in report, path
        bus = said["        Bus"].removeprefix("0x")
        assert gpu.findtext("pci/pci_bus") == bus and gpu.findtext("pci/pci_device_id") == \
            said["        Device Id"].removeprefix("0x")


def test_by_board():
    h100 = xml()[1].find("gpu")
    # Hopper: T.Limit temperatures (margins), remapped rows with its banks, one process.
    assert h100.findtext("remapped_rows/row_remapper_histogram/row_remapper_histogram_max") == "2560 bank(s)"
    assert h100.findtext("temperature/gpu_temp_max_gpu_tlimit_threshold") == "0 C"
    assert [p.findtext("pid") for p in h100.iter("process_info")] == ["4100"]
    assert h100.findtext("processes/process_info/used_memory") == "71226 MiB"
    volta = xml("-i", "0", shot=snap(name="Tesla V100-SXM2-32GB", total=32768, cap=300))[1].find("gpu")
    assert volta.findtext("remapped_rows") == "N/A"
    assert volta.findtext("retired_pages/double_bit_retirement/retired_count") == "0"
    idle = xml(shot=snap(name=A100, total=40960, cap=400, pids=False, util=0))[1].find("gpu")
    assert idle.find("processes") is not None and len(idle.find("processes")) == 0
    assert idle.findtext("clocks_event_reasons/clocks_event_reason_gpu_idle") == "Active"
    assert idle.findtext("temperature/gpu_temp_max_threshold") == "92 C"  # no T.Limit on Ampere


def test_id_chooses_as_the_text_does():
    _, root = xml("-i", "2")
    (gpu,) = root.iter("gpu")
    assert root.findtext("attached_gpus") == "8" and gpu.get("id") == "00000000:3A:00.0"
    assert run("-x", "-q") == run("--query", "--xml-format") == run("-q", "-x")


def test_options_that_take_no_xml():
    bad = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"
    assert run("-x") == (2, bad, "")
    assert run("-x", "-L") == (2, bad, "")
    # -d "Doesn't work with -u or -x flags" (the 590.48.01 capture's `nvidia-smi -h`).
    assert run("-q", "-x", "-d", "MEMORY") == (2, bad, "")
    assert run("-x", "--query-gpu=index", "--format=csv") == (2, bad, "")


def test_escaped_and_unbranded():
    shot = dataclasses.replace(snap(), process="python train.py --tag a<b&c")
    out, root = xml(shot=shot)
    assert root.find("gpu").findtext("processes/process_info/process_name") == "python train.py --tag a<b&c"
    assert "fakerun" not in out.lower()
