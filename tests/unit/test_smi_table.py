"""fakerun smi: nvidia-smi's table char for char, the snapshot file, the sink."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from fakerun import events as ev
from fakerun.render.sinks import SinkFailed
from fakerun.smi import GpuRow, SmiStateSink, Snapshot, SnapshotError, nvsmi
from fakerun.smi.device import host_gpus
from fakerun.smi.table import DASHBOARD_FIELDS, compact, fit, layout_for, table
from fakerun.world import identity
from fakerun.world import physics as sim

GOLDEN = Path(__file__).parent / "golden"
H100 = "NVIDIA H100 80GB HBM3"
NOW = "Thu Nov 21 19:58:02 2024"


def gpu(index: int, *, node: int = 0, name: str = H100, bus: str = "18", util: int = 100,
        used: int = 71310, total: int = 81559, temp: int = 40, power: int = 600, cap: int = 700,
        pid: int = 0, host: str = "gpu-node-01") -> GpuRow:
    return GpuRow(rank=node * 8 + index, node=node, index=index, host=host, name=name,
                  bus_id=f"00000000:{bus}:00.0", util=util, mem_used_mib=used, mem_total_mib=total,
                  temp_c=temp, power_w=power, power_cap_w=cap, pid=pid)


def snapshot(gpus: list[GpuRow], driver: str = "535.183.01", cuda: str = "12.2",
             process: str = "/usr/bin/python3") -> Snapshot:
    return Snapshot(time=1732215482.0, run_id="job-1", driver=driver, cuda=cuda, process=process,
                    step=120, gpus=gpus)


# -- the table ------------------------------------------------------------------
def test_535_layout_matches_the_reference_8xh100_example_char_for_char():
    # 8 x H100 training on driver 535.183.01, composed on the 535 layout of real outputs: the
    # 535.183.01 header of Syllo/nvtop#335, H100 rows of NVIDIA/dcgm-exporter#512 (535.129.03).
    buses = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
    temps = [41, 36, 35, 40, 42, 36, 38, 35]
    powers = [598, 574, 569, 611, 604, 581, 590, 566]
    used = [71234, *[71310] * 6, 70982]
    utils = [100, 100, 99, 100, 100, 100, 100, 98]
    gpus = [gpu(i, bus=buses[i], util=utils[i], used=used[i], temp=temps[i], power=powers[i],
                pid=2543453 + i) for i in range(8)]
    expected = (GOLDEN / "nvidia_smi_535_8xh100.txt").read_text().splitlines()
    assert table(snapshot(gpus), NOW) == expected


def test_550_layout_gpu_block_matches_the_reference():
    # One GPU block in the 550 layout, which 570 keeps: compare the H100 blocks of wilicc/gpu-burn#114
    # (550.90.07) and the GH200 block of sgawe11/rag-on-gh200 README.md (570.133.20).
    lines = table(snapshot([gpu(0, bus="04", util=93, used=74953, temp=51, power=495)],
                           driver="570.158.01", cuda="12.8"), NOW)
    assert lines[8:12] == [
        "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:04:00.0 Off |                    0 |",
        "| N/A   51C    P0            495W /  700W |   74953MiB /  81559MiB |     93%      Default |",
        "|                                         |                        |             Disabled |",
        "+-----------------------------------------+------------------------+----------------------+",
    ]


def test_550_header_processes_and_left_truncated_process_name():
    lines = table(snapshot([gpu(0, pid=4242, used=1000)], driver="550.127.05", cuda="12.4",
                           process="/home/ml/miniconda3/envs/pytorch/bin/python"), NOW)
    assert {len(line) for line in lines[1:]} == {91}
    # The version line of 550-570.0xx as in Frogging-Family/nvidia-all#212 (550.40.07) and
    # slackr31337/wyoming-piper-gpu#20 (550.135); the processes header is the r550 layout's.
    assert lines[2] == f"| NVIDIA-SMI {'550.127.05':<22} Driver Version: {'550.127.05':<14} CUDA Version: {'12.4':<9}|"
    assert lines[3].startswith("|---") and lines[12] == " " * 91
    assert lines[15:17] == [
        "|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |",
        "|        ID   ID                                                               Usage      |"]
    # Long paths keep their end behind "..." (as in XuehaiPan/nvitop#152); a process uses 8 MiB less
    # than its GPU (fakerun's driver_reserved_mib).
    assert lines[18] == f"| {0:>4}   N/A  N/A {4242:>9} {'C':>6}   {'.../miniconda3/envs/pytorch/bin/python':<42}{'992MiB':>10} |"


def test_550_without_processes():
    lines = table(snapshot([gpu(0)], driver="550.54.15", cuda="12.4"), NOW)
    assert lines[-2] == ("|  No running processes found                                "
                         "                             |")


def test_580_layout_draws_the_rule_with_plus_and_a_wide_pid_column():
    lines = table(snapshot([gpu(0, pid=2543453)], driver="580.126.09", cuda="13.0"), NOW)
    assert lines[3] == "+-----------------------------------------+------------------------+----------------------+"
    assert lines[12] == ""  # the spacer is an empty line
    assert lines[15] == "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |"
    assert lines[18].startswith("|    0   N/A  N/A         2543453      C   /usr/bin/python3 ")


def test_old_layout_matches_the_reference_525_a100_lines():
    # The header of a real 525.105.17 table (Wan-Video/Wan2.1#5) and the A100 rows of a real
    # 515.65.01 node in the same layout (mrnorman/miniWeather#12), no process.
    a100 = gpu(0, name="NVIDIA A100-SXM4-40GB", bus="03", util=0, used=0, total=40960, temp=28,
               power=52, cap=400)
    lines = table(snapshot([a100], driver="525.105.17", cuda="12.0"), NOW)
    assert lines[1:11] == [
        "+-----------------------------------------------------------------------------+",
        "| NVIDIA-SMI 525.105.17   Driver Version: 525.105.17   CUDA Version: 12.0     |",
        "|-------------------------------+----------------------+----------------------+",
        "| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |",
        "|                               |                      |               MIG M. |",
        "|===============================+======================+======================|",
        "|   0  NVIDIA A100-SXM...  On   | 00000000:03:00.0 Off |                    0 |",
        "| N/A   28C    P0    52W / 400W |      0MiB / 40960MiB |      0%      Default |",
        "|                               |                      |             Disabled |",
    ]
    assert lines[15:17] == [
        "|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |",
        "|        ID   ID                                                   Usage      |"]
    assert {len(line) for line in lines[1:]} == {79}


@pytest.mark.parametrize(("driver", "width", "pid_width"), [
    ("470.82.01", 79, 9), ("525.105.17", 79, 9), ("530.30.02", 89, 9), ("535.183.01", 89, 9),
    ("545.23.08", 89, 9), ("550.54.15", 91, 9), ("570.86.10", 91, 9), ("570.133.20", 91, 15),
    ("575.51.03", 91, 15), ("580.65.06", 91, 15), ("not-a-version", 79, 9)])
def test_layout_by_driver(driver, width, pid_width):
    assert (layout_for(driver).width, layout_for(driver).pid_width) == (width, pid_width)


def test_desktop_board_shows_a_fan_and_no_ecc():
    lines = table(snapshot([gpu(0, name="NVIDIA GeForce RTX 4090", cap=450, total=24564)]), NOW)
    assert lines[8].endswith("Off |                  Off |") and lines[8][38:41] == "Off"
    assert lines[9].startswith("| 30%   40C    P0") and lines[10].endswith("N/A |")


def test_boards_without_mig_say_n_a_and_pcie_data_centre_boards_disabled():
    # "NVIDIA L4 ... 23034MiB ... N/A" and "Tesla V100-SXM2-32GB ... 32768MiB ... N/A" in real
    # 535/550 tables; "NVIDIA H100 PCIe ... 81559MiB ... Disabled" likewise.
    for name, total, cap, mig in (("NVIDIA L4", 23034, 72, "N/A"), ("Tesla V100-SXM2-32GB", 32768, 300, "N/A"),
                                  ("NVIDIA H100 PCIe", 81559, 350, "Disabled")):
        lines = table(snapshot([gpu(0, name=name, cap=cap, total=total, used=0)]), NOW)
        assert lines[8].startswith(f"|   0  {name:<31}On  |")
        assert lines[9].endswith(f"/ {f'{cap}W':<4} |      0MiB / {f'{total}MiB':<8} |    100%      Default |")
        assert lines[10].endswith(f"{mig:>21} |")


def test_one_table_per_node_under_its_host():
    gpus = [gpu(i, node=n, host=f"dgx-{n:02d}", pid=100 + 8 * n + i) for n in range(2) for i in range(2)]
    lines = table(snapshot(gpus), NOW)
    heads = [i for i, line in enumerate(lines) if line.startswith("==> ")]
    assert [lines[i] for i in heads] == ["==> dgx-00 <==", "==> dgx-01 <=="]
    assert heads[0] == 0 and lines[heads[1] - 1] == "" and lines[heads[1] + 1] == f"{NOW}       "
    second = lines[heads[1]:]
    assert [line.split()[4] for line in second if "   N/A  N/A " in line] == ["108", "109"]
    assert lines[1:heads[1] - 1] == table(snapshot(gpus[:2]), NOW)


# -- compact -------------------------------------------------------------------
def test_compact_is_one_line_per_node():
    gpus = [gpu(i, node=n, host=f"node{n:03d}", util=90 + i, used=40960, temp=40 + i + n, power=500)
            for n in range(3) for i in range(4)]
    assert compact(snapshot(gpus)) == [
        f"node00{n}   4 GPUs  util  92%  mem  160.0/318.6 GiB  power  2000 W  max {43 + n}C" for n in range(3)]
    assert [line[:7] for line in compact(snapshot(gpus), range(1, 3))] == ["node001", "node002"]
    assert compact(snapshot(gpus[:1]))[0].startswith("node000   1 GPU   util  90%")


# -- the snapshot file ----------------------------------------------------------
def test_json_round_trip():
    snap = dataclasses.replace(snapshot([gpu(0, pid=7), gpu(1, node=1)]), finished=True)
    body = json.loads(snap.to_json())
    assert body["v"] == 1 and list(body)[0] == "v" and body["gpus"][0]["bus_id"] == "00000000:18:00.0"
    assert Snapshot.from_json(snap.to_json()) == snap
    assert Snapshot.from_json(snap.to_json().encode()) == snap


def _body() -> dict:
    return json.loads(snapshot([gpu(0)]).to_json())


def _broken(change) -> str:
    body = _body()
    change(body)
    return json.dumps(body)


@pytest.mark.parametrize(("text", "says"), [
    ("", "not a JSON snapshot"),
    ("{\"v\": 1, ", "not a JSON snapshot"),
    (b"\xff\xfe", "not a JSON snapshot"),
    ("[1, 2]", "expected a JSON object"),
    ("[" * 100000, "not a JSON snapshot"),
    (_broken(lambda b: b.update(v=2)), "snapshot version 2 is not 1"),
    (_broken(lambda b: b.pop("run_id")), "snapshot: missing field 'run_id'"),
    (_broken(lambda b: b.update(step="12")), "snapshot: field 'step' should be a whole number >= 0, got \"12\""),
    (_broken(lambda b: b.update(finished=1)), "field 'finished' should be true or false, got 1"),
    (_broken(lambda b: b.update(gpus=[])), "'gpus' should be a non-empty list"),
    (_broken(lambda b: b.update(gpus={})), "'gpus' should be a non-empty list"),
    (_broken(lambda b: b["gpus"][0].pop("pid")), "gpus[0]: missing field 'pid'"),
    (_broken(lambda b: b["gpus"][0].update(util=True)), "gpus[0]: field 'util' should be a whole number >= 0, got true"),
    (_broken(lambda b: b["gpus"][0].update(temp_c=-3)), "gpus[0]: field 'temp_c' should be a whole number >= 0, got -3"),
    (_broken(lambda b: b.update(time=float("nan"))), "snapshot: field 'time' should be a number >= 0 (a time before the year 10000), got NaN"),
    (_broken(lambda b: b.update(time=1e300)), "snapshot: field 'time' should be a number >= 0 (a time before"),
    (_broken(lambda b: b.update(clock=1e300)), "snapshot: field 'clock' should be a number >= 0 (a time before"),
    (_broken(lambda b: b["gpus"].append("x")), "gpus[1]: expected a JSON object"),
])
def test_malformed_snapshots_are_one_line_errors(text, says):
    with pytest.raises(SnapshotError) as caught:
        Snapshot.from_json(text)
    message = str(caught.value)
    assert says in message and "\n" not in message and len(message) < 200


def test_unknown_fields_are_ignored():
    body = _body()
    body["extra"] = 1
    body["gpus"][0]["fan"] = "N/A"
    assert Snapshot.from_json(json.dumps(body)).gpus[0].pid == 0


# -- the sink ---------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ident():
    return identity.build(seed=3, nnodes=2, nproc=4, total_steps=100, gpu=H100)


def sink_for(tmp_path: Path, clock: Clock) -> SmiStateSink:
    return SmiStateSink(tmp_path / "smi.json", "/opt/conda/bin/python3", monotonic=clock, wall=clock)


def read(tmp_path: Path) -> Snapshot:
    return Snapshot.from_json((tmp_path / "smi.json").read_text())


def start(sink: SmiStateSink, ident, ranks) -> None:
    sink.event(ev.RunIdentity(ident))
    sink.event(ev.RunStarted("job-7", ident.world, 2, 4, 0, 3, "train.py", [], 100, "127.0.0.1", 29500,
                             999, 0, 0.0))
    for r in ranks:
        sink.event(ev.RankStarted(r, r % 4, r // 4, 5000 + r, {}))


def test_sink_writes_every_gpu_of_the_cluster_once_all_ranks_started(tmp_path, ident):
    clock = Clock()
    sink = sink_for(tmp_path, clock)
    start(sink, ident, range(7))
    assert not (tmp_path / "smi.json").exists()  # nothing flushed, not all ranks yet
    sink.event(ev.RankStarted(7, 3, 1, 5007, {}))  # the last rank: written at once
    snap = read(tmp_path)
    assert (snap.run_id, snap.driver, snap.process, snap.finished) == (
        "job-7", ident.versions.driver, "/opt/conda/bin/python3", False)
    assert snap.cuda in ("12.2", "12.4")
    assert [(g.rank, g.node, g.index, g.pid) for g in snap.gpus] == [
        (r, r // 4, r % 4, 5000 + r) for r in range(8)]
    assert [g.host for g in snap.gpus] == [ident.host(r) for r in range(8)]
    assert snap.gpus[1].bus_id == "00000000:2A:00.0" and snap.gpus[5].bus_id == "00000000:2A:00.0"
    # Before any reading: allocated but idle.
    init = sim.telemetry(ident, 0, 0, "init")
    assert (snap.gpus[0].util, snap.gpus[0].mem_used_mib) == (0, init.mem_used_mib)
    assert snap.gpus[0].mem_total_mib == 81559 and snap.gpus[0].power_cap_w == 700


def test_sink_rate_limit_and_urgent_writes(tmp_path, ident):
    clock = Clock()
    sink = sink_for(tmp_path, clock)
    start(sink, ident, range(8))
    assert read(tmp_path).time == 100.0
    clock.now = 100.2
    sink.event(ev.Step(1, 100, 2.0, 2.0, 2.0, 1.0))
    sink.flush()
    assert read(tmp_path).step == 0  # throttled: one write a second at most
    clock.now = 100.9
    sink.flush()
    assert read(tmp_path).step == 0
    clock.now = 101.0
    sink.flush()
    snap = read(tmp_path)
    assert (snap.time, snap.step) == (101.0, 1)
    assert snap.gpus[2].util == sim.telemetry(ident, 2, 1, "train").util
    clock.now = 101.1  # the first GPU report goes out at once
    sample = ev.GpuSample(3, 0, 3, 77, 61, 432, 54321, 81559)
    sink.event(ev.GpuStatus(1, [sample], 101.1))
    assert read(tmp_path).gpus[3].util == 77 and read(tmp_path).time == 101.1
    clock.now = 101.2
    sink.event(ev.GpuStatus(2, [sample], 101.2))  # not the first: waits for flush
    sink.flush()
    assert read(tmp_path).time == 101.1
    sink.event(ev.RunFinished(0, 2))  # the end goes out at once
    assert read(tmp_path).finished and read(tmp_path).time == 101.2
    assert read(tmp_path).clock == 101.2  # the run's clock: the latest event's time
    sink.flush()
    sink.close()
    assert list(tmp_path.iterdir()) == []


def test_a_paced_run_s_table_goes_on_with_its_clock_between_events(tmp_path, ident):
    """nvidia-smi's header is the time it runs at: between two step events
    of a paced run (tens of seconds at --speed 1) the table's time moves on
    with the run's clock, a write a second; unpaced, only events move it."""
    clock = Clock()
    run_clock = Clock()
    sink = SmiStateSink(tmp_path / "smi.json", "python", monotonic=clock, wall=clock, run_clock=run_clock)
    start(sink, ident, range(8))
    (tmp_path / "unpaced").mkdir()
    assert sink.clocked and not sink_for(tmp_path / "unpaced", clock).clocked
    shown = []
    for _ in range(3):
        clock.now += 1.0
        run_clock.now += 1.0
        sink.flush()
        shown.append(read(tmp_path).clock)
    assert shown == [101.0, 102.0, 103.0]


def test_sink_writes_atomically(tmp_path, ident):
    clock = Clock()
    sink = sink_for(tmp_path, clock)
    start(sink, ident, range(8))
    first = (tmp_path / "smi.json").stat().st_ino
    clock.now += 1
    sink.event(ev.Phase("validation", "", 5, 0.0))
    sink.flush()
    # A new file replaced the old (a reader never sees a half-written one),
    # and no temp file is left next to it.
    assert (tmp_path / "smi.json").stat().st_ino != first
    assert [p.name for p in tmp_path.iterdir()] == ["smi.json"]
    assert read(tmp_path).gpus[0].util == sim.telemetry(ident, 0, 0, "validation").util


def test_sink_forgets_exited_ranks_and_new_attempts(tmp_path, ident):
    clock = Clock()
    sink = sink_for(tmp_path, clock)
    start(sink, ident, range(8))
    sink.event(ev.RankExited(2, 2, 0, 5002, 1))
    clock.now += 1
    sink.flush()
    row = read(tmp_path).gpus[2]
    assert (row.pid, row.mem_used_mib, row.util) == (0, 0, 0)
    assert "No running processes found" not in "\n".join(table(read(tmp_path), NOW))


def test_sink_nothing_before_the_identity_and_unwritable_paths(tmp_path):
    sink = sink_for(tmp_path, Clock())
    sink.event(ev.RankStarted(0, 0, 0, 1, {}))
    sink.flush()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkFailed) as caught:
        SmiStateSink(tmp_path / "missing" / "smi.json", "python")
    assert "missing/smi.json" in str(caught.value) and "\n" not in str(caught.value)


# -- fitted to a dashboard pane -------------------------------------------------
def two_nodes() -> Snapshot:
    return snapshot([gpu(i, node=n, host=f"node{n}", pid=100 + n * 8 + i) for n in range(2) for i in range(8)])


def test_fit_puts_nodes_side_by_side_when_they_fit():
    snap = two_nodes()
    lines = fit(snap, 200, 200, 0, NOW)
    width = layout_for(snap.driver).width
    assert lines[0].startswith("==> node0 <==") and lines[0][width + 2:].startswith("==> node1 <==")
    left = [line[:width].rstrip() for line in lines[1:]]
    assert left == [line.rstrip() for line in table(snapshot(snap.gpus[:8]), NOW)]


def test_fit_pages_through_what_is_too_tall_under_each_part_s_heading():
    snap = two_nodes()
    pages = [fit(snap, 200, 16, page, NOW) for page in range(6)]
    assert all(len(p) <= 16 and max(map(len, p)) <= 200 for p in pages)
    assert [p[0][-5:] for p in pages] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "[1/5]"]
    gpu_pages = pages[:4]
    assert all("Persistence-M" in "\n".join(p) for p in gpu_pages)
    shown = [line[:7] for p in gpu_pages for line in p if line[:2] == "| " and line[2:6].strip().isdigit()]
    assert shown == [f"|   {i}  " for i in range(8)]  # every GPU once, in order
    assert "| Processes:" in pages[4][2] and pages[4][-1].startswith("+---")
    assert sum(line.count("      C   ") for line in pages[4]) == 16  # both nodes' 8 processes


def test_fit_narrower_than_a_table_is_the_query_csv_pdsh_style():
    lines = fit(two_nodes(), 80, 24, 0, NOW)
    assert lines[0].lstrip().startswith("index, name, utilization.gpu [%]") and len(lines) == 17
    # The power reading carries the fraction the table's whole watts drop, as nvidia-smi's query does;
    # each node's lines are what that node's nvidia-smi prints (one piece of code: smi/query.py).
    assert re.fullmatch(r"node0: 0, NVIDIA H100 80GB HBM3, 100 %, 71310 MiB, 81559 MiB, 40, 600\.\d\d W", lines[1])
    own = nvsmi.render(nvsmi.parse([f"--query-gpu={DASHBOARD_FIELDS}", "--format=csv,noheader"]),
                       host_gpus(two_nodes()), 8)
    assert lines[1:9] == [f"node0: {line}" for line in own]
    assert all(len(line) <= 80 for line in lines)
    paged = fit(two_nodes(), 80, 9, 1, NOW)
    assert len(paged) == 9 and paged[0].endswith("[2/2]") and paged[1].startswith("node1: 0,")
