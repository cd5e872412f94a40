"""nvidia-smi's other outputs (`-L`, `--query-gpu`, `--query-compute-apps`,
`-q -d`, `-i`, `-l`), option by option against real nvidia-smi output
pasted in public sources (each test names its own):

- CAPTURE: utkuozdemir/nvidia_gpu_exporter internal/captures/
  linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt, a real H100's
  `nvidia-smi -L`, `--query-gpu=<every field> --format=csv` and
  `--query-compute-apps=... --format=csv` (header and rows);
- A100_535: XueSongTap/XueSongTap.github.io _posts/2024-01-04-nvidia-smi-more.md,
  `nvidia-smi -a` of 8 x A100-SXM4-40GB on driver 535.129.03 (the NVSMI LOG
  layout: banner, header, 42-wide keys, sections)."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest

from fakerun.smi import GpuRow, Snapshot, idle, nvsmi
from fakerun.smi.device import card, host_gpus
from fakerun.smi.table import table
from fakerun.world import catalog

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
A100_KEYS = Path(__file__).parents[1] / "fixtures" / "nvidia_smi" / "a100_535_q_keys.txt"
BUSES = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
UUID = r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def snap(nodes: int = 1, name: str = H100, total: int = 81559, cap: int = 700, vendor: str = "nvidia",
         pids: bool = True, util: int = 99) -> Snapshot:
    gpus = [GpuRow(rank=n * 8 + i, node=n, index=i, host=f"gpu-node-{n:02d}", name=name,
                   bus_id=f"00000000:{BUSES[i]}:00.0", util=util,
                   mem_used_mib=(71234 if total == 81559 else total * 7 // 8) + i,
                   mem_total_mib=total, temp_c=40 + i, power_w=590 + i, power_cap_w=cap,
                   pid=(4100 + n * 8 + i) if pids else 0) for n in range(nodes) for i in range(8)]
    return Snapshot(time=1732215482.25, run_id="job-1", driver="535.183.01", cuda="12.2",
                    process="/opt/conda/bin/python3", step=120, gpus=gpus, vendor=vendor, seed=7)


def run(*argv: str, shot: Snapshot | None = None, sleeps: int | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if sleeps is not None and len(calls) >= sleeps:
            raise KeyboardInterrupt

    chosen = snap() if shot is None else shot
    code = nvsmi.main(list(argv), out, err, lambda: chosen, tool=True, sleep=sleep)
    return code, out.getvalue(), err.getvalue()


# -- -L -------------------------------------------------------------------------
def test_list_gpus_line_format():
    # "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95)" in
    # influxdata/telegraf#5812; "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)" in CAPTURE.
    code, out, err = run("-L")
    lines = out.splitlines()
    assert (code, err, len(lines)) == (0, "", 8)
    for i, line in enumerate(lines):
        assert re.fullmatch(rf"GPU {i}: NVIDIA H100 80GB HBM3 \(UUID: {UUID}\)", line)
    assert len({line.split("UUID: ")[1] for line in lines}) == 8  # every board its own
    assert run("--list-gpus")[1] == out


def test_uuids_are_the_seeds_and_the_boards():
    first = run("-L")[1]
    assert run("-L")[1] == first  # same run, same boards
    other = dataclasses.replace(snap(), seed=8)
    assert run("-L", shot=other)[1] != first


# -- --query-gpu ----------------------------------------------------------------------
def test_query_gpu_header_units_and_rows():
    # CAPTURE's header: "index, ..., memory.total [MiB], memory.reserved [MiB], memory.used [MiB],
    # memory.free [MiB], ..., utilization.gpu [%], ..., temperature.gpu, ..., power.draw [W], ...,
    # clocks.current.sm [MHz]"; its H100 row: "81559 MiB, 479 MiB, 19818 MiB, 61263 MiB", "100 %",
    # "631.95 W", "1980 MHz", "00000000:00:09.0", "P0", "[N/A]" (fan.speed).
    code, out, _ = run("--query-gpu=index,name,utilization.gpu,memory.used,memory.total,memory.reserved,"
                       "memory.free,temperature.gpu,power.draw,clocks.current.sm,pci.bus_id,pstate,fan.speed",
                       "--format=csv")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 9
    assert lines[0] == ("index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], "
                        "memory.reserved [MiB], memory.free [MiB], temperature.gpu, power.draw [W], "
                        "clocks.current.sm [MHz], pci.bus_id, pstate, fan.speed [%]")
    assert re.fullmatch(r"0, NVIDIA H100 80GB HBM3, 99 %, 71234 MiB, 81559 MiB, 479 MiB, 9846 MiB, 40, "
                        r"590\.\d\d W, 1980 MHz, 00000000:18:00\.0, P0, \[N/A\]", lines[1])


def test_noheader_nounits_and_aliases():
    # Tools' usual call (issue 21; gpustat's in wookayin/gpustat#5): no header, bare numbers.
    code, out, _ = run("--query-gpu=index,name,utilization.gpu,memory.used", "--format=csv,noheader,nounits")
    assert code == 0 and out.splitlines()[3] == "3, NVIDIA H100 80GB HBM3, 99, 71237"
    # An alias asks for its field; the header names the field (CAPTURE's --help-query-gpu lists
    # "clocks.current.sm" or "clocks.sm"; the accounted-apps header shows "gpu_utilization [%]" for gpu_util).
    code, out, _ = run("--query-gpu", "gpu_name,clocks.sm,gpu_bus_id", "--format", "csv")
    assert out.splitlines()[0] == "name, clocks.current.sm [MHz], pci.bus_id"
    assert out.splitlines()[1] == "NVIDIA H100 80GB HBM3, 1980 MHz, 00000000:18:00.0"


def test_a_valid_field_fakerun_does_not_draw_reads_n_a_with_or_without_units():
    code, out, _ = run("--query-gpu=index,inforom.oem,fan.speed", "--format=csv,nounits")
    assert out.splitlines()[:2] == ["index, inforom.oem, fan.speed [%]", "0, [N/A], [N/A]"]


def test_unknown_field_is_nvidia_smis_message_on_stdout_exit_2():
    # CoHDI/composable-resource-operator#37: stdout 'Field "device_minor" is not a valid field to
    # query.\n\n', stderr empty, "command terminated with exit code 2".
    assert run("--query-gpu=device_minor,gpu_uuid,pci.bus_id", "--format=csv,noheader,nounits") == (
        2, 'Field "device_minor" is not a valid field to query.\n\n', "")


@pytest.mark.parametrize("argv", [["--format=csv"], ["--query-gpu=index"], ["--query-gpu=index", "--format=json"],
                                  ["-L", "--query-gpu=index", "--format=csv"], ["-d", "MEMORY"],
                                  ["-q", "-d", "NOPE"], ["-l", "0"], ["-lms", "x"]])
def test_bad_combinations_exit_2(argv):
    # influxdata/telegraf#6573: `nvidia-smi --format="csv"` -> this line.
    assert run(*argv) == (2, "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n", "")


def test_unknown_option():
    # wilmerwang/GPUSitter#4: "ERROR: Option noheader is not recognized. Please run 'nvidia-smi -h' for help."
    assert run("--bogus") == (2, "ERROR: Option --bogus is not recognized. Please run 'nvidia-smi -h' for help.\n", "")


def test_query_agrees_with_the_table():
    shot = snap()
    rows = run("--query-gpu=utilization.gpu,memory.used,temperature.gpu,power.draw", "--format=csv,noheader,nounits",
               shot=shot)[1].splitlines()
    grid = table(shot)
    for i, row in enumerate(rows):
        util, used, temp, power = row.split(", ")
        reading = grid[9 + 4 * i]  # each GPU's second table line
        assert f"{used}MiB /" in reading and f"{util}%" in reading and f" {temp}C " in reading
        assert f" {int(float(power))}W / 700W" in reading


# -- -i -----------------------------------------------------------------------------
def test_select_by_index_uuid_and_bus_id():
    uuid = run("-L")[1].splitlines()[5].split("UUID: ")[1].rstrip(")")
    code, out, _ = run("-i", f"1,{uuid},00000000:DB:00.0", "--query-gpu=index", "--format=csv,noheader")
    assert (code, out) == (0, "1\n5\n7\n")
    assert run("--id=3A:00.0", "--query-gpu=index", "--format=csv,noheader")[1] == "2\n"
    assert run("-i", "8", "-L") == (6, "No devices were found\n", "")


def test_table_of_one_gpu():
    code, out, _ = run("-i", "2")
    lines = out.splitlines()
    assert code == 0 and sum(line.startswith("|   2  NVIDIA H100") for line in lines) == 1
    assert not any(line.startswith("|   0  ") for line in lines)


# -- --query-compute-apps --------------------------------------------------------------
def test_compute_apps_are_the_ranks():
    # CAPTURE: "timestamp, gpu_name, gpu_bus_id, gpu_serial, gpu_uuid, pid, process_name,
    # used_gpu_memory [MiB]" over "..., 11345, ./gpu_burn, 15690 MiB"; used_memory is an alias.
    code, out, _ = run("--query-compute-apps=pid,process_name,used_memory,gpu_uuid", "--format=csv")
    lines = out.splitlines()
    assert lines[0] == "pid, process_name, used_gpu_memory [MiB], gpu_uuid"
    uuids = [line.split("UUID: ")[1].rstrip(")") for line in run("-L")[1].splitlines()]
    assert lines[1:] == [f"{4100 + i}, /opt/conda/bin/python3, {71226 + i} MiB, {uuids[i]}" for i in range(8)]
    # No process: the header alone (CAPTURE's idle capture).
    assert run("--query-compute-apps=pid,used_memory", "--format=csv", shot=snap(pids=False))[1] == \
        "pid, used_gpu_memory [MiB]\n"


# -- -q -d ------------------------------------------------------------------------------
def report(*display: str, shot: Snapshot | None = None) -> list[str]:
    code, out, _ = run("-q", "-d", ",".join(display), shot=shot)
    assert code == 0
    return out.splitlines()


def test_report_header_and_memory_section():
    # A100_535: "", the banner, "", "Timestamp" ... (keys padded to 42 columns), "Attached GPUs : 8",
    # "GPU 00000000:2F:00.0", "    FB Memory Usage", "        Total ... : 40960 MiB", Reserved, Used, Free.
    lines = report("MEMORY")
    assert lines[:8] == ["", "==============NVSMI LOG==============", "",
                         "Timestamp                                 : " + lines[3][44:],
                         "Driver Version                            : 535.183.01",
                         "CUDA Version                              : 12.2", "",
                         "Attached GPUs                             : 8"]
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", lines[3][44:])
    assert lines[8:22] == [
        "GPU 00000000:18:00.0",
        "    FB Memory Usage",
        "        Total                             : 81559 MiB",
        "        Reserved                          : 479 MiB",
        "        Used                              : 71234 MiB",
        "        Free                              : 9846 MiB",
        "    BAR1 Memory Usage",
        "        Total                             : 131072 MiB",
        "        Used                              : 4 MiB",
        "        Free                              : 131068 MiB",
        "    Conf Compute Protected Memory Usage",
        "        Total                             : 0 MiB",
        "        Used                              : 0 MiB",
        "        Free                              : 0 MiB"]
    assert lines[22] == "" and lines[23] == "GPU 00000000:2A:00.0"  # an empty line after each GPU


def test_report_power_samples_and_order():
    # A 535.54.03 `-q -d POWER`: "GPU Power Readings" (Power Draw, Current/Requested/Default/Min/Max
    # Power Limit), "Power Samples" (Duration, Number of Samples, Max, Min, Avg), "Module Power Readings".
    lines = report("POWER", "MEMORY")  # -d's order is not the report's
    assert lines.index("    FB Memory Usage") < lines.index("    GPU Power Readings")
    at = lines.index("    GPU Power Readings")
    keys = [line.split(":")[0].strip() for line in lines[at:at + 20]]
    assert keys == ["GPU Power Readings", "Power Draw", "Current Power Limit", "Requested Power Limit",
                    "Default Power Limit", "Min Power Limit", "Max Power Limit", "Power Samples", "Duration",
                    "Number of Samples", "Max", "Min", "Avg", "Module Power Readings", "Power Draw",
                    "Current Power Limit", "Requested Power Limit", "Default Power Limit", "Min Power Limit",
                    "Max Power Limit"]
    draw = float(lines[at + 1].split(": ")[1].rstrip(" W"))
    peak, low, avg = (float(lines[at + k].split(": ")[1].rstrip(" W")) for k in (10, 11, 12))
    assert low <= avg <= peak <= 700 and low <= draw <= peak
    assert lines[at + 5] == "        Min Power Limit                   : 200.00 W"


def test_report_temperature_by_board_generation():
    # A100_535 (Ampere): absolute limits, "GPU T.Limit Temp : N/A", "GPU Shutdown Temp : 92 C".
    a100 = snap(name="NVIDIA A100-SXM4-40GB", total=40960, cap=400)
    lines = report("TEMPERATURE", shot=a100)
    at = lines.index("    Temperature")
    assert lines[at + 2:at + 5] == ["        GPU T.Limit Temp                  : N/A",
                                    "        GPU Shutdown Temp                 : 92 C",
                                    "        GPU Slowdown Temp                 : 89 C"]
    # Hopper reports margins (CAPTURE: "GPU T.Limit Temp : 46 C" at 41 C, Shutdown -8 C, Slowdown -2 C).
    lines = report("TEMPERATURE")
    at = lines.index("    Temperature")
    assert lines[at + 1:at + 5] == ["        GPU Current Temp                  : 40 C",
                                    "        GPU T.Limit Temp                  : 47 C",
                                    "        GPU Shutdown T.Limit Temp         : -8 C",
                                    "        GPU Slowdown T.Limit Temp         : -2 C"]


def test_report_pids_and_idle_processes():
    lines = report("PIDS")
    assert "        Process ID                        : 4100" in lines
    assert "            Used GPU Memory               : 71226 MiB" in lines
    assert "    Processes                             : None" in report("PIDS", shot=snap(pids=False))


def test_report_clocks_idle_and_loaded():
    loaded = report("CLOCK")
    assert "        Graphics                          : 1980 MHz" in loaded[10:14]
    quiet = report("CLOCK", shot=snap(pids=False, util=0))
    # CAPTURE's idle H100: Graphics 345 MHz, Memory 2619 MHz, Video 765 MHz; Max Clocks 1980/2619/1545.
    assert quiet[9:14] == ["    Clocks", "        Graphics                          : 345 MHz",
                           "        SM                                : 345 MHz",
                           "        Memory                            : 2619 MHz",
                           "        Video                             : 765 MHz"]


# -- the host, the loop, the driver -----------------------------------------------------
def test_node_zero_is_the_host():
    code, out, _ = run("-L", shot=snap(nodes=2))
    assert len(out.splitlines()) == 8
    assert run("--query-gpu=count", "--format=csv,noheader", shot=snap(nodes=2))[1] == "8\n" * 8


def test_loop_prints_the_header_once_until_ctrl_c():
    code, out, _ = run("--query-gpu=index", "--format=csv", "-l", "1", sleeps=3)
    lines = out.splitlines()
    assert code == 130 and lines.count("index") == 1 and len(lines) == 1 + 3 * 8
    code, out, _ = run("-L", "-lms", "250", sleeps=2)
    assert code == 130 and len(out.splitlines()) == 16


def test_an_amd_host_has_no_nvidia_driver():
    # What nvidia-smi says where the NVIDIA driver is not loaded; exit 9 (its man page).
    code, out, _ = run("-L", shot=snap(vendor="amd"))
    assert code == 9 and out.startswith("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_help_is_nvidia_smis():
    code, out, _ = run("-h")
    assert code == 0 and out.startswith("NVIDIA System Management Interface -- v535.183.01\n")
    assert "fakerun" not in out.lower()


def test_idle_host_shows_no_process_idle_clocks_and_power():
    shot = idle.snapshot(1732215482.0)
    assert shot.vendor == "nvidia" and len(shot.gpus) == 8 and all(g.pid == 0 for g in shot.gpus)
    devices = host_gpus(shot)
    board = card(shot.gpus[0].name)
    assert {d.clock_graphics for d in devices} == {board.idle["graphics"]}
    assert all(d.row.util == 0 and d.row.mem_used_mib == 0 and d.power < 0.2 * d.row.power_cap_w for d in devices)
    assert run("--query-compute-apps=pid", "--format=csv,noheader", shot=shot)[1] == ""
    assert idle.snapshot(1.0).gpus == shot.gpus  # the same machine every call


def test_every_nvidia_board_has_its_card():
    for gpu in catalog.gpus():
        if gpu.vendor == "nvidia":
            c = card(gpu.name)
            assert c.clocks["graphics"] > c.idle["graphics"] and c.power_min_w < gpu.power_cap_w
            assert c.reserved_mib < gpu.memory_mib and re.fullmatch(r"0x[0-9A-F]{4}10DE", c.device_id)


def test_nothing_a_tool_reads_names_fakerun():
    for argv in (["-L"], ["--query-gpu=index,name,uuid,serial", "--format=csv"], ["-q", "-d", "PIDS,MEMORY"],
                 ["--query-compute-apps=pid,process_name", "--format=csv"], []):
        assert "fakerun" not in run(*argv)[1].lower()



def test_whole_report_has_the_535_reports_every_key_in_order():
    # A100_535's GPU block, key by key (193 lines: tests/fixtures/nvidia_smi/a100_535_q_keys.txt),
    # for an idle A100-SXM4-40GB as it was there (no process, no -d: no samples blocks).
    idle_a100 = snap(name=A100, total=40960, cap=400, pids=False, util=0)
    code, out, _ = run("-q", "-i", "0", shot=idle_a100)
    lines = out.splitlines()
    block = lines[lines.index("GPU 00000000:18:00.0") + 1:]
    while block and not block[-1]:
        block.pop()
    keys = [line[:42].rstrip() if " : " in line else line for line in block]
    expected = [k for k in A100_KEYS.read_text().splitlines() if not k.startswith("#")]
    assert code == 0 and keys == expected
    # The values the board itself reports, as A100_535 shows them.
    for line in ("    VBIOS Version                         : 92.00.36.00.04",
                 "    Board Part Number                     : 692-2G506-0200-002",
                 "        Device Id                         : 0x20B010DE",
                 "        Sub System Id                     : 0x134F10DE",
                 "        Reserved                          : 620 MiB",
                 "        Total                             : 65536 MiB",
                 "        Min Power Limit                   : 100.00 W",
                 "        Graphics                          : 210 MHz",
                 "        Video                             : 585 MHz",
                 "        Graphics                          : 1095 MHz",
                 "            Max                           : 640 bank(s)",
                 "        GPU Shutdown Temp                 : 92 C",
                 "        Memory Max Operating Temp         : 95 C",
                 "    Processes                             : None"):
        assert line in block, line


def test_whole_report_by_board():
    # Hopper remaps rows (CAPTURE: 2560 banks); Volta retires pages and remaps none; a desktop
    # board has neither, nor ECC.
    assert "            Max                           : 2560 bank(s)" in run("-q")[1].splitlines()
    volta = run("-q", "-i", "0", shot=snap(name="Tesla V100-SXM2-32GB", total=32768, cap=300))[1].splitlines()
    assert "        Single Bit ECC                    : 0" in volta and "    Remapped Rows                         : N/A" in volta
    desk = run("-q", "-i", "0", shot=snap(name="NVIDIA GeForce RTX 4090", total=24564, cap=450))[1].splitlines()
    assert "        Current                           : Disabled" in desk  # ECC Mode
    assert "    Serial Number                         : N/A" in desk and "    Fan Speed                             : 30 %" in desk
