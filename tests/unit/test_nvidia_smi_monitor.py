"""`nvidia-smi dmon` and `pmon` against the 590.48.01 captures of `dmon -c 5`
and `pmon -c 5` (idle and loaded H100) in utkuozdemir/nvidia_gpu_exporter
internal/captures/linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt, e.g.
(each line ends in a space there)

    # gpu    pwr  gtemp  mtemp     sm    mem    enc    dec    jpg    ofa   mclk   pclk
    # Idx      W      C      C      %      %      %      %      %      %    MHz    MHz
        0    631     63     57    100     10      0      0      0      0   2619   1980

    # gpu         pid   type     sm    mem    enc    dec    jpg    ofa    command
    # Idx           #    C/G      %      %      %      %      %      %    name
        0      11345     C     99     10      -      -      -      -    gpu_burn

and `dmon -s pucvmet` pasted in public notes (the groups' columns and order)."""

from __future__ import annotations

import io

from fakerun.smi import nvsmi
from tests.unit.test_nvidia_smi import run, snap

DMON_HEAD = ["# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec    jpg    ofa   mclk   pclk ",
             "# Idx      W      C      C      %      %      %      %      %      %    MHz    MHz "]
PMON_HEAD = ["# gpu         pid   type     sm    mem    enc    dec    jpg    ofa    command ",
             "# Idx           #    C/G      %      %      %      %      %      %    name "]


def test_dmon_rows_are_the_devices():
    code, out, _ = run("dmon", "-c", "2")
    lines = out.splitlines()
    assert code == 0 and lines[:2] == DMON_HEAD and len(lines) == 2 + 2 * 8
    q = run("--query-gpu=index,power.draw,temperature.gpu,utilization.gpu,clocks.mem,clocks.sm",
            "--format=csv,noheader,nounits")[1].splitlines()
    for line, csv in zip(lines[2:10], q, strict=True):
        assert len(line) == 5 + 7 * 11 + 1 and line.endswith(" ")
        idx, pwr, gtemp, mtemp, sm, mem, *engines, mclk, pclk = line.split()
        index, power, temp, util, clock_mem, clock_sm = (v.strip() for v in csv.split(","))
        assert (idx, gtemp, sm, mclk, pclk) == (index, temp, util, clock_mem, clock_sm)
        assert pwr == str(int(float(power))) and engines == ["0"] * 4
        assert 0 < int(mem) < int(sm) and int(mtemp) > 0  # HBM reports its temperature


def test_dmon_groups_count_delay_and_id():
    code, out, _ = run("dmon", "-s", "mcp", "-i", "3", "-c", "3", "-d", "2")
    lines = out.splitlines()
    assert lines[0].split()[1:] == ["gpu", "pwr", "gtemp", "mtemp", "mclk", "pclk", "fb", "bar1", "ccpm"]
    assert lines[1].split()[2:] == ["W", "C", "C", "MHz", "MHz", "MB", "MB", "MB"]
    assert [line.split()[0] for line in lines[2:]] == ["3", "3", "3"] and code == 0
    assert lines[2].split()[6] == "71237"  # fb: the used memory the table shows
    assert run("dmon", "-c", "1", "-s", "e", shot=snap(name="NVIDIA GeForce RTX 4090", total=24564,
                                                       cap=450))[1].splitlines()[2].split() == ["0", "-", "-", "0"]


def test_dmon_sleeps_its_delay_between_samples():
    slept: list[float] = []
    code = nvsmi.main(["dmon", "-c", "3", "-d", "2"], io.StringIO(), io.StringIO(), snap, tool=True,
                      sleep=slept.append)
    assert code == 0 and slept == [2, 2]  # none after the last sample
    nvsmi.main(["pmon", "-c", "2"], io.StringIO(), io.StringIO(), snap, tool=True, sleep=slept.append)
    assert slept == [2, 2, 1]  # pmon's default: a second


def test_dmon_until_interrupted():
    code, out, _ = run("dmon", "-i", "0", sleeps=3)
    assert code == 130 and len(out.splitlines()) == 2 + 3


def test_pmon_rows_are_the_ranks():
    code, out, _ = run("pmon", "-c", "1")
    lines = out.splitlines()
    assert code == 0 and lines[:2] == PMON_HEAD and len(lines) == 10
    assert lines[2] == "    0       4100     C     99     35      -      -      -      -    python3        "
    idle = run("pmon", "-c", "1", "-i", "0", shot=snap(pids=False, util=0))[1].splitlines()
    assert idle[2] == "    0          -     -      -      -      -      -      -      -    -              "


def test_bad_monitor_options():
    for argv in (["dmon", "-s", "x"], ["dmon", "-c", "0"], ["pmon", "-s", "u"], ["dmon", "-c"], ["pmon", "-x", "1"]):
        code, out, _ = run(*argv)
        assert code == 2 and out.startswith("ERROR: Option ") and "fakerun" not in out, argv


def test_what_is_not_drawn_is_not_supported_never_unknown():
    # nvidia-smi knows these (the 590.48.01 capture's -h lists them): NVML's "Not Supported", exit 3
    # (nvidia-smi(1), RETURN VALUE 3: "The requested operation is not available on target device").
    for argv, name in ((["topo", "-mp"], "topo"), (["nvlink", "-s"], "nvlink"), (["-pm", "1"], "-pm"),
                       (["--lock-gpu-clocks=1500"], "--lock-gpu-clocks"), (["-q", "-u"], "-u"),
                       (["--query-supported-clocks=gr", "--format=csv"], "--query-supported-clocks")):
        assert run(*argv) == (3, f"Unable to run {name}: Not Supported\n", ""), argv
    assert run("--bogus")[0] == 2 and "is not recognized" in run("--bogus")[1]
