"""The DCGM exporter's scrape: the pinned counters file, the text exactly as
dcgm-exporter 3.3.8-3.6.0's template writes it (pkg/dcgmexporter/pipeline.go
migMetricsFormat, gpu_collector.go ToMetric/ToString), read back with the
Prometheus text parser, and each value against the GPU rows nvidia-smi
shows and the run's clock."""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakerun import events as ev
from fakerun.dcgm.collector import DcgmCollector
from fakerun.dcgm.counters import parse, pinned, xid_text
from fakerun.dcgm.exposition import GpuSample, render
from fakerun.smi.device import Device, host_gpus
from fakerun.smi.query import listing
from fakerun.smi.sink import SmiStateSink
from fakerun.world import hardware as hardware_module
from fakerun.world import identity
from fakerun.world.hardware import HEALTHY, Condition, uptime_at_start

START = 1_780_000_000.0
H100 = "NVIDIA H100 80GB HBM3"
# dcp-metrics-included.csv at 3.3.8-3.6.0: its uncommented lines, in the file's order.
FILE_ORDER = ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
              "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
              "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
              "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED",
              "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
              "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
              "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_DRIVER_VERSION", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
              "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES",
              "DCGM_FI_PROF_PCIE_RX_BYTES"]


def test_the_pinned_counters_are_the_release_files_and_come_out_by_field_id():
    exporter = pinned()
    text = resources.files("fakerun").joinpath("data", "dcgm-exporter-3.3.8-3.6.0.csv").read_text()
    from fakerun import texts
    assert [c.name for c in parse(text, texts.load("dcgm_exporter")["fields"])] == FILE_ORDER
    ids = [c.field_id for c in exporter.counters]
    assert ids == sorted(ids) and ids[:2] == [100, 101] and ids[-1] == 1010
    # text/template sorts the Counter keys: 393-395 (remapped rows) before 449 (NVLink), 526 (vGPU) after.
    names = [c.name for c in exporter.counters]
    assert names.index("DCGM_FI_DEV_ROW_REMAP_FAILURE") < names.index("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL") \
        < names.index("DCGM_FI_DEV_VGPU_LICENSE_STATUS") < names.index("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    assert [c.name for c in exporter.labels] == ["DCGM_FI_DRIVER_VERSION"]
    assert exporter.interval_s == 30.0 and exporter.version == "3.3.8-3.6.0"
    # The parser's trim: "DCGM_FI_DEV_DEC_UTIL ," is the counter DCGM_FI_DEV_DEC_UTIL.
    assert next(c for c in exporter.counters if c.name == "DCGM_FI_DEV_DEC_UTIL").help == "Decoder utilization (in %)."


def test_a_line_is_the_templates_labels_in_order_then_the_sorted_maps():
    sample = GpuSample(3, "GPU-1", "00000000:9A:00.0", H100, "node7",
                       {"DCGM_FI_DEV_POWER_USAGE": 412.5, "DCGM_FI_DEV_XID_ERRORS": 79, "DCGM_FI_DEV_GPU_UTIL": None},
                       {"DCGM_FI_DRIVER_VERSION": "550.127.05"},
                       {"pod": "job-worker-0", "namespace": "ml", "container": "pytorch"})
    text = render(pinned(), [sample])
    base = 'gpu="3",UUID="GPU-1",pci_bus_id="00000000:9A:00.0",device="nvidia3",modelName="NVIDIA H100 80GB HBM3",' \
           'Hostname="node7",DCGM_FI_DRIVER_VERSION="550.127.05"'
    assert text == (
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).\n# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
        f'DCGM_FI_DEV_POWER_USAGE{{{base},container="pytorch",namespace="ml",pod="job-worker-0"}} 412.500000\n'
        "# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.\n"
        "# TYPE DCGM_FI_DEV_XID_ERRORS gauge\n"
        f'DCGM_FI_DEV_XID_ERRORS{{{base},container="pytorch",err_code="79",err_msg="GPU has fallen off the bus",'
        'namespace="ml",pod="job-worker-0"} 79\n')  # a blank value (GPU_UTIL): no line, no HELP
    assert xid_text(48) == "Double Bit ECC Error" and xid_text(94) == "Contained ECC error"
    assert xid_text(95) == "Uncontained ECC error" and xid_text(10_000) == "Unknown Error"


def run_ident(gpu: str = H100, nproc: int = 2, nnodes: int = 1) -> identity.Identity:
    return identity.build(7, nnodes, nproc, 40, gpu=gpu)


def feed(sinks: list, ident: identity.Identity, steps: range, dt: float = 4.0, node: int = 0,
         start: float = START) -> float:
    """The events a node's agent sees of a training run: its ranks start, each step's all_reduce and Step."""
    when = start
    for s in sinks:
        for r in ident.topology.node_ranks(node):
            s.event(ev.RankStarted(r, ident.topology.local_rank_of(r), node, 1000 + r, {}))
    for step in steps:
        when = start + dt * step
        for s in sinks:
            s.event(ev.Collective("0", "all_reduce", step, 1, "float32", list(range(ident.world)), 900, "train_step",
                                  25_000_000))
            s.event(ev.Step(step, 40, 2.0, 1.9, 2.1, 1.0, time=when))
    return when


def families(c: DcgmCollector) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(c.body().decode())}


def by_gpu(fams: dict, name: str) -> dict[str, float]:
    return {s.labels["gpu"]: s.value for s in fams[name].samples}


def test_the_scrape_parses_and_agrees_with_nvidia_smis_rows(tmp_path):
    ident = run_ident()
    c = DcgmCollector(ident, 0, None, START)
    smi = SmiStateSink(tmp_path / "smi.json", "python")
    smi.event(ev.RunIdentity(ident))
    feed([c, smi], ident, range(0))
    snap = smi.snapshot()
    for step in range(1, 30):  # nvidia-smi's rows as they were when the exporter last collected
        before, at = smi.snapshot(), c.at
        feed([c, smi], ident, range(step, step + 1))
        if c.at != at:
            snap = before
    fams = families(c)
    # prometheus_client reads a counter's samples with _total; the exposition names them without.
    types = {c.name: c.prom_type for c in pinned().counters}
    assert {f.name.removesuffix("_total"): f.type for f in fams.values()}.items() <= \
        {n.removesuffix("_total"): t for n, t in types.items()}.items()
    assert set(fams) == {n.removesuffix("_total") if types[n] == "counter" else n for n in types}
    devices = {str(d.row.index): d for d in host_gpus(snap)}
    listed = dict(zip(devices, listing(list(devices.values())), strict=True))
    for sample in fams["DCGM_FI_DEV_GPU_UTIL"].samples:
        d = devices[sample.labels["gpu"]]
        assert f"(UUID: {sample.labels['UUID']})" in listed[sample.labels["gpu"]]  # nvidia-smi -L's
        assert sample.labels["pci_bus_id"] == d.row.bus_id and sample.labels["device"] == f"nvidia{d.row.index}"
        assert (sample.labels["modelName"], sample.labels["Hostname"]) == (H100, ident.host(0))
        assert sample.labels["DCGM_FI_DRIVER_VERSION"] == ident.versions.driver
    g = {name: by_gpu(fams, name) for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                                               "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
                                               "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")}
    for gpu, d in devices.items():
        assert g["DCGM_FI_DEV_GPU_UTIL"][gpu] == d.row.util > 90
        assert g["DCGM_FI_DEV_FB_USED"][gpu] == d.row.mem_used_mib
        assert g["DCGM_FI_DEV_FB_USED"][gpu] + g["DCGM_FI_DEV_FB_FREE"][gpu] + d.mem_reserved == d.row.mem_total_mib
        assert g["DCGM_FI_DEV_GPU_TEMP"][gpu] == d.row.temp_c
        assert int(g["DCGM_FI_DEV_POWER_USAGE"][gpu]) == d.row.power_w <= d.row.power_cap_w
        assert g["DCGM_FI_DEV_SM_CLOCK"][gpu] == d.clock_graphics
        assert abs(g["DCGM_FI_PROF_GR_ENGINE_ACTIVE"][gpu] * 100 - d.row.util) <= 0.5


def test_values_hold_between_collections_and_move_on_the_runs_clock():
    ident = run_ident()
    c = DcgmCollector(ident, 0, None, START)
    first = c.body()
    assert b"DCGM_FI_DEV_GPU_UTIL" in first and c.next_due - 30.0 <= START < c.next_due
    feed([c], ident, range(1, 2), dt=(c.next_due - START) / 2)  # a step inside the interval
    assert c.body() == first  # the exporter serves its last collection until the next
    feed([c], ident, range(2, 30))
    assert c.body() != first


def test_energy_is_the_boot_idle_then_the_trapezoid_of_the_power_shown():
    ident = run_ident()
    c = DcgmCollector(ident, 0, None, START)
    up = uptime_at_start(ident, 0) - (START - c.at)
    e0 = by_gpu(families(c), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    p0 = by_gpu(families(c), "DCGM_FI_DEV_POWER_USAGE")
    assert all(e0[g] == int(1000 * up * p0[g]) for g in e0)  # idle since the node booted
    at0 = c.at
    for step in range(1, 40):  # to the next collection: the trapezoid from idle to busy, to the mJ
        feed([c], ident, range(step, step + 1))
        if c.at != at0:
            break
    e1 = by_gpu(families(c), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    p1 = by_gpu(families(c), "DCGM_FI_DEV_POWER_USAGE")
    assert all(abs(e1[g] - e0[g] - 1000 * (p0[g] + p1[g]) / 2 * 30.0) <= 1 for g in e1) and p1 != p0
    e0, p0, at0 = e1, p1, c.at
    feed([c], ident, range(step + 1, 40))
    e1 = by_gpu(families(c), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    p1 = by_gpu(families(c), "DCGM_FI_DEV_POWER_USAGE")
    at1 = c.at
    assert (at1 - at0) % 30.0 == pytest.approx(0.0, abs=1e-6) and at1 > at0
    for gpu in e1:  # busy all along: the mean power the collections showed, over the time between
        mean = (e1[gpu] - e0[gpu]) / 1000 / (at1 - at0)
        assert abs(mean / ((p0[gpu] + p1[gpu]) / 2) - 1) < 0.03 and mean <= ident.gpu.power_cap_w


def test_nvlink_carries_the_collectives_bytes_and_a_pcie_card_none():
    ident = run_ident()
    c = DcgmCollector(ident, 0, None, START)
    end = feed([c], ident, range(1, 60), dt=1.0)
    window = c.at - (c.next_due - 2 * 30.0)
    moved = 25_000_000 * 4 * 2 * (2 - 1) / 2  # all_reduce of 25M fp32 over 2 ranks: 2(n-1)/n of it each way
    steps = sum(1 for s in range(1, 60) if c.next_due - 60.0 < START + s <= c.at)
    mbps = by_gpu(families(c), "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL")
    assert end >= c.at and window == 30.0
    assert all(v == round(2 * moved * steps / 30.0 / 1e6) for v in mbps.values())  # tx + rx, MB/s
    pcie = DcgmCollector(run_ident("NVIDIA L40S"), 0, None, START)
    feed([pcie], run_ident("NVIDIA L40S"), range(1, 60), dt=1.0)
    fams = families(pcie)
    assert "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL" not in fams  # N/A on a PCIe card: blank, no lines
    assert "DCGM_FI_DEV_MEMORY_TEMP" not in fams  # GDDR: no memory temperature
    assert min(by_gpu(fams, "DCGM_FI_PROF_PCIE_RX_BYTES").values()) > 2 * moved * 20 / 30.0 / 2


@dataclasses.dataclass(frozen=True)
class _Fault:
    """A fault of no scenario's kind: the GPUs' condition is what the test fakes."""

    kind: str = "fake"
    rank: int = 0
    step: int | None = 1

    def param(self, name: str) -> float:
        raise KeyError(name)


FAKE_FAULT = _Fault()


def fake_condition(monkeypatch, by_rank: dict[int, Condition], from_step: int) -> None:
    def condition(ident, fault, rank, step):
        return by_rank.get(rank, HEALTHY) if step >= from_step else HEALTHY
    monkeypatch.setattr(hardware_module, "condition", condition)


def test_a_gpu_fallen_off_the_bus_shows_only_its_xid_and_keeps_it(monkeypatch):
    fake_condition(monkeypatch, {1: Condition(xid=79, lost=True)}, from_step=10)
    ident = run_ident()
    c = DcgmCollector(ident, 0, FAKE_FAULT, START)
    feed([c], ident, range(1, 40))
    fams = families(c)
    assert set(by_gpu(fams, "DCGM_FI_DEV_GPU_UTIL")) == {"0"}  # NVML answers nothing for it
    xid = {s.labels["gpu"]: s for s in fams["DCGM_FI_DEV_XID_ERRORS"].samples}
    assert xid["1"].value == 79 and xid["1"].labels["err_msg"] == "GPU has fallen off the bus"
    assert xid["0"].value == 0 and xid["0"].labels["err_msg"] == "No Error"


def test_an_xid_stays_the_last_one_after_the_gpu_recovers(monkeypatch):
    def condition(ident, fault, rank, step):
        return Condition(xid=48) if rank == 0 and 5 <= step < 8 else HEALTHY
    monkeypatch.setattr(hardware_module, "condition", condition)
    ident = run_ident()
    c = DcgmCollector(ident, 0, FAKE_FAULT, START)
    feed([c], ident, range(1, 40), dt=10.0)
    assert by_gpu(families(c), "DCGM_FI_DEV_XID_ERRORS") == {"0": 48, "1": 0}  # dcgm-exporter issue 500


def test_a_thermal_slowdown_lowers_the_clock_and_raises_the_temperature(monkeypatch):
    ident = run_ident()
    healthy = DcgmCollector(ident, 0, None, START)
    feed([healthy], ident, range(1, 40))
    fake_condition(monkeypatch, {0: Condition(clock_factor=0.6, temp_rise_c=9.0, event_reasons=0x40)}, 1)
    hot = DcgmCollector(ident, 0, FAKE_FAULT, START)
    feed([hot], ident, range(1, 40))
    before, after = families(healthy), families(hot)
    clock = (by_gpu(before, "DCGM_FI_DEV_SM_CLOCK"), by_gpu(after, "DCGM_FI_DEV_SM_CLOCK"))
    temp = (by_gpu(before, "DCGM_FI_DEV_GPU_TEMP"), by_gpu(after, "DCGM_FI_DEV_GPU_TEMP"))
    assert clock[1]["0"] == round(clock[0]["0"] * 0.6 / 15) * 15 and clock[1]["1"] == clock[0]["1"]
    assert temp[1]["0"] == temp[0]["0"] + 9 and temp[1]["1"] == temp[0]["1"]
    assert by_gpu(after, "DCGM_FI_DEV_MEMORY_TEMP")["0"] > by_gpu(before, "DCGM_FI_DEV_MEMORY_TEMP")["0"]


def test_each_node_serves_its_own_gpus_and_the_pods_labels():
    ident = run_ident(nproc=2, nnodes=2)
    pod = {"container": "pytorch", "namespace": "ml", "pod": "demo-worker-0"}
    c = DcgmCollector(ident, 1, None, START, pod=pod)
    feed([c], ident, range(1, 10), node=1)
    sample = families(c)["DCGM_FI_DEV_GPU_UTIL"].samples[0]
    assert sample.labels["Hostname"] == ident.host(2) and sample.labels["gpu"] == "0"
    assert {k: sample.labels[k] for k in pod} == pod
    snap_row = dataclasses.replace(host_gpus_row(ident, 2), node=1)
    assert sample.labels["UUID"] == Device(snapshot_of(ident), snap_row).uuid


def snapshot_of(ident: identity.Identity):
    from fakerun.smi.snapshot import Snapshot
    return Snapshot(0.0, "", ident.versions.driver, "", "python", 0, [], seed=ident.seed)


def host_gpus_row(ident: identity.Identity, rank: int):
    from fakerun.smi.snapshot import GpuRow
    local = ident.topology.local_rank_of(rank)
    return GpuRow(rank, ident.topology.node_of(rank), local, ident.host(rank), ident.gpu.name,
                  f"00000000:{ident.gpu.bus_id(local).upper()}:00.0", 0, 0, ident.gpu.memory_mib, 30, 100,
                  ident.gpu.power_cap_w, 0)


def test_a_loops_next_run_carries_on_the_same_gpus_counters(monkeypatch):
    fake_condition(monkeypatch, {0: Condition(xid=94)}, from_step=3)
    ident = run_ident()
    first = DcgmCollector(ident, 0, FAKE_FAULT, START)
    end = feed([first], ident, range(1, 30))
    energy = by_gpu(families(first), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    monkeypatch.setattr(hardware_module, "condition", lambda *a: HEALTHY)
    again = identity.build(8, 1, 2, 40, gpu=H100)  # --loop: seed + 1 on the same nodes
    nxt = DcgmCollector(again, 0, None, end, before=first)
    assert nxt.body() == first.body()  # the exporter serves its last collection until its next
    feed([nxt], again, range(1, 30), start=end)
    later = families(nxt)
    assert all(v > energy[g] for g, v in by_gpu(later, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION").items())
    assert by_gpu(later, "DCGM_FI_DEV_XID_ERRORS") == {"0": 94, "1": 0}


def test_a_throttled_gpu_reads_in_dcgm_as_in_nvidia_smi(tmp_path):
    """The thermal-throttle scenario's own condition, not a fake one: the
    exporter's clock and temperature are nvidia-smi's at the collection
    (once each: the ranks' reading has the heat in it already)."""
    from fakerun.config.options import Fault
    ident = run_ident()
    fault = Fault("thermal", 1, 5, (("cooling", 2.5), ("heat_steps", 4.0)))
    c = DcgmCollector(ident, 0, fault, START)
    smi = SmiStateSink(tmp_path / "smi.json", "python", fault=fault)
    smi.event(ev.RunIdentity(ident))
    snap = None
    for step in range(1, 40):
        before, at = smi.snapshot(), c.at
        when = feed([c, smi], ident, range(step, step + 1))
        # The ranks' own report (rank/training.py), each step here: the heat is in their reading.
        readings = [(r, hardware_module.reading(ident, fault, r, step, "train")) for r in range(2)]
        status = ev.GpuStatus(step, [ev.GpuSample(r, 0, r, t.util, t.temp_c, t.power_w, t.mem_used_mib,
                                                  ident.gpu.memory_mib) for r, t in readings], when)
        for sink in (c, smi):
            sink.event(status)
        if c.at != at:
            snap = before
    assert snap is not None
    devices = {str(d.row.index): d for d in host_gpus(snap)}
    fams = families(c)
    clock = by_gpu(fams, "DCGM_FI_DEV_SM_CLOCK")
    assert clock == {gpu: d.clock_graphics for gpu, d in devices.items()} and clock["1"] < clock["0"]
    assert by_gpu(fams, "DCGM_FI_DEV_GPU_TEMP") == {gpu: d.row.temp_c for gpu, d in devices.items()}
    assert devices["1"].row.temp_c > devices["0"].row.temp_c + 5


def _struck(ident: identity.Identity, fault, tmp_path) -> tuple[DcgmCollector, SmiStateSink]:
    """A run whose --fail-rank meets the scenario's Xid at step 5: its node's
    kernel logs it (the KernelMessage the coordinator sends as the rank dies)."""
    c = DcgmCollector(ident, 0, fault, START)
    smi = SmiStateSink(tmp_path / "smi.json", "python", fault=fault)
    smi.event(ev.RunIdentity(ident))
    feed([c, smi], ident, range(1, 5))
    for sink in (c, smi):
        sink.event(ev.KernelMessage(0, "NVRM: Xid (PCI:0000:3b:00): ...", START + 4 * 5))
    feed([c, smi], ident, range(5, 40), start=START + 20.0)  # a restarted attempt's ranks on the same GPUs
    return c, smi


def test_the_ecc_scenario_raises_the_xid_and_records_the_row_as_nvidia_smi_does(tmp_path):
    from fakerun.config.options import Fault
    ident = run_ident()
    c, smi = _struck(ident, Fault("xid", 1, 5, (("code", 94.0),)), tmp_path)
    fams = families(c)
    assert by_gpu(fams, "DCGM_FI_DEV_XID_ERRORS") == {"0": 0, "1": 63}  # 48, 94, then the row's 63: the last
    row = {str(d.row.index): d for d in host_gpus(smi.snapshot())}["1"]
    assert row.dram_uncorrectable == 1
    assert by_gpu(fams, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS") == {"0": 0, "1": 1}
    assert by_gpu(fams, "DCGM_FI_DEV_ROW_REMAP_FAILURE") == {"0": 0, "1": 0}


def test_the_fallen_off_the_bus_scenario_leaves_only_its_xid(tmp_path):
    from fakerun.config.options import Fault
    ident = run_ident()
    c, _ = _struck(ident, Fault("xid", 1, 5, (("code", 79.0),)), tmp_path)
    fams = families(c)
    assert by_gpu(fams, "DCGM_FI_DEV_XID_ERRORS") == {"0": 0, "1": 79}
    assert set(by_gpu(fams, "DCGM_FI_DEV_GPU_TEMP")) == {"0"}  # NVML reads nothing from it any more
