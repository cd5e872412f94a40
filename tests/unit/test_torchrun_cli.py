"""Every option of every pinned torch's `torchrun --help` (2.3.1, 2.4.1,
2.5.1, 2.9.1 from their wheels' torch/distributed/run.py, 2.13.0 the real
command's; tests/fixtures/torchrun_help/, made by its capture.py) is
accepted in each of its spellings, whatever torch the run claims, with its
effect where it has one for a simulation: a config field, the environment a
rank sees, a worker's command line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakerun.cli.main import build_parser, to_config
from fakerun.config import launch as launches
from fakerun.launcher.build import worker_env
from fakerun.rank import title

HELP = Path(__file__).parents[1] / "fixtures" / "torchrun_help"
VERSIONS = sorted(p.stem for p in HELP.glob("*.txt"))


def options_of(help_text: str) -> list[tuple[str, ...]]:
    """The spellings of each option of an argparse help's options section."""
    section = help_text.split("\noptions:\n", 1)[1]
    found = []
    for line in section.splitlines():
        if re.match(r"^  -", line):  # an option's line; its description's are indented further
            invocation = re.split(r"\s{2,}", line.strip())[0]  # "-t TEE, --tee TEE"
            found.append(tuple(part.split(" ")[0] for part in invocation.split(", ")))
    return found


HELPS = {version: options_of((HELP / f"{version}.txt").read_text()) for version in VERSIONS}
SPELLINGS = sorted({name for options in HELPS.values() for names in options for name in names} - {"-h", "--help"})

Check = Callable[[Any], object]
ENV: dict[str, str] = {}


def env_of(c: Any, local: int = 1) -> dict[str, str]:
    return worker_env(c, c.topology.global_rank(local), local, {})


# Each option (by its first spelling): the value given (None: a flag), other
# arguments it needs, and what it changes (an expression of the config that
# must hold; `None` where torchrun's option has no effect a simulation shows).
EFFECTS: dict[str, tuple[str | None, tuple[str, ...], Check]] = {
    "--nnodes": ("1:4", (), lambda c: c.topology.nnodes == 1),
    "--nproc-per-node": ("3", (), lambda c: c.topology.nproc_per_node == 3),
    "--rdzv-backend": ("c10d", (), lambda c: dict(c.settings.launch_configs)["rdzv_backend"] == "c10d"),
    "--rdzv-endpoint": ("localhost:0", (), lambda c: c.master_addr == "localhost" and 0 < c.master_port < 65536),
    "--rdzv-id": ("job-7", (), lambda c: env_of(c)["TORCHELASTIC_RUN_ID"] == "job-7"),
    "--rdzv-conf": ("join_timeout=42,read_timeout=5", (), lambda c: c.rdzv_timeout_s == 42.0),
    "--standalone": (None, ("--nnodes", "2"), lambda c: c.topology.nnodes == 1),
    "--max-restarts": ("2", (), lambda c: env_of(c)["TORCHELASTIC_MAX_RESTARTS"] == "2"),
    "--monitor-interval": ("0.5", (), lambda c: c.launch.monitor_interval == 0.5),
    "--start-method": ("fork", (), lambda c: c.launch.start_method == "fork"),
    "--event-log-handler": ("console", (), lambda c: dict(c.settings.launch_configs)["event_log_handler"] == "console"),
    "--role": ("trainer", (), lambda c: env_of(c)["ROLE_NAME"] == "trainer"),
    "-m": (None, (), lambda c: c.launch.how == launches.MODULE),
    "--no-python": (None, (), lambda c: c.launch.how == launches.NO_PYTHON),
    "--run-path": (None, (), lambda c: c.launch.how == launches.RUN_PATH),
    "--log-dir": ("{tmp}/logs", (), lambda c: c.log_dir is not None and c.log_dir.name == "logs"),
    "-r": ("0:1,1:2", (), lambda c: [c.settings.redirects_of(r) for r in range(3)] == [1, 2, 0]),
    "-t": ("1:3", (), lambda c: [c.settings.tee_of(r) for r in range(3)] == [0, 3, 0]),
    "--local-ranks-filter": ("0,2", (), lambda c: c.settings.local_ranks == {0, 2}),
    "--duplicate-stdout-filters": ("loss,,x,step", (), lambda c: c.launch.duplicate_stdout_filters == ("loss,x", "step")),
    "--duplicate-stderr-filters": ("NCCL", (), lambda c: c.launch.duplicate_stderr_filters == ("NCCL",)),
    "--node-rank": ("1", ("--nnodes", "2", "--token", "t"), lambda c: env_of(c)["GROUP_RANK"] == "1"),
    "--master-addr": ("10.1.2.3", (), lambda c: env_of(c)["MASTER_ADDR"] == "10.1.2.3"),
    "--master-port": ("29511", (), lambda c: env_of(c)["MASTER_PORT"] == "29511"),
    "--local-addr": ("10.0.0.7", (), lambda c: c.launch.local_addr == "10.0.0.7"),
    "--logs-specs": ("default", (), lambda c: c.launch.logs_specs == "default"),
    "--numa-binding": ("socket", (), lambda c: c.launch.numa_binding == "socket"),
    "--signals-to-handle": ("SIGTERM,SIGUSR1", (),
                            lambda c: env_of(c)["TORCHELASTIC_SIGNALS_TO_HANDLE"] == "SIGTERM,SIGUSR1"),
    "--shutdown-timeout": ("7", (), lambda c: c.shutdown_grace_s == 7),
    "--virtual-local-rank": (None, (), lambda c: (env_of(c)["LOCAL_RANK"], env_of(c)["CUDA_VISIBLE_DEVICES"])
                             == ("0", "1")),
}
ALIASES = {name: names[0] for options in HELPS.values() for names in options for name in names}


def argv_for(spelling: str, tmp: Path) -> list[str]:
    value, extra, _ = EFFECTS[ALIASES[spelling]]
    given = [] if value is None else [value.format(tmp=tmp)]
    script = "pkg.train" if ALIASES[spelling] == "-m" else "train.py"
    return ["--nproc-per-node", "3", *extra, spelling, *given, "--seed", "1", script]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_option_of_the_help_has_an_entry_in_the_table(version: str):
    assert {names[0] for names in HELPS[version]} - {"-h"} <= set(EFFECTS)
    assert len(HELPS[version]) >= 24  # the parse found the section (2.3.1 has 24 options with -h)


def test_the_versions_differ_as_their_run_py_does():
    first = {names[0] for names in HELPS["2.3.1"]}
    assert first == {names[0] for names in HELPS["2.5.1"]}
    assert {names[0] for names in HELPS["2.9.1"]} - first == {"--event-log-handler", "--numa-binding"}
    assert {names[0] for names in HELPS["2.13.0"]} - {names[0] for names in HELPS["2.9.1"]} == {
        "--duplicate-stdout-filters", "--duplicate-stderr-filters", "--signals-to-handle", "--shutdown-timeout",
        "--virtual-local-rank"}


@pytest.mark.parametrize("version", VERSIONS)
def test_each_spelling_of_each_version_is_accepted(version: str, tmp_path: Path):
    parser = build_parser()
    for spelling in (name for names in HELPS[version] for name in names if name not in ("-h", "--help")):
        ns = parser.parse_args(argv_for(spelling, tmp_path))
        assert ns.training_script in ("train.py", "pkg.train"), spelling


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_each_option_has_its_effect(spelling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    c = to_config(build_parser().parse_args(argv_for(spelling, tmp_path)), environ={})
    assert EFFECTS[ALIASES[spelling]][2](c)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["-h"])
    assert info.value.code == 0 and "--no-python" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "words"), [
    (["-m", "--no-python", "pkg.train"], "Don't use both the '--no-python' flag and the '--module' flag"),
    (["--start-method", "thread", "train.py"], "invalid choice: 'thread'"),
    (["--numa-binding", "cpu", "train.py"], "invalid choice: 'cpu'"),
    (["--tee", "0:1,12:3", "train.py"], "0:1,12:3 does not match"),
    (["--monitor-interval", "0", "train.py"], "--monitor-interval must be > 0"),
    (["--nnodes", "2", "--rdzv-endpoint", "head:0", "train.py"], "port 0"),
    (["--nproc", "2", "-m"], "the following arguments are required: training_script"),
])
def test_bad_launch_lines_are_one_line_and_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]):
    from fakerun.cli.main import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_run_path_wins_over_no_python():
    c = to_config(build_parser().parse_args(["--run-path", "--no-python", "/abs/train.py"]), environ={})
    assert c.launch.how == launches.RUN_PATH


@pytest.mark.parametrize(("flags", "argv"), [
    ((), ["/opt/py", "-u", "train.py", "--lr", "1"]),
    (("-m",), ["/opt/py", "-u", "-m", "train.py", "--lr", "1"]),
    (("--no-python",), ["train.py", "--lr", "1"]),
    (("--run-path",), ["/opt/py", "-c", "from multiprocessing.spawn import spawn_main; "
                       "spawn_main(tracker_fd=8, pipe_handle=14)", "--multiprocessing-fork"]),
])
def test_the_workers_command_line_is_torchruns(flags: tuple[str, ...], argv: list[str]):
    ns = build_parser().parse_args([*flags, "train.py", "--lr", "1"])
    from fakerun.cli.launch_options import launch

    assert title.command("train.py", ["--lr", "1"], {"PYTHON_EXEC": "/opt/py"}, launch(ns), 1) == argv


def test_a_forked_run_path_worker_keeps_the_launchers_command_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(title.sys, "argv", ["/usr/bin/torchrun", "--run-path", "/w/train.py"])
    how = launches.Launch(launches.RUN_PATH, "fork")
    assert title.command("/w/train.py", [], {}, how) == ["/usr/bin/torchrun", "--run-path", "/w/train.py"]


@pytest.mark.parametrize(("how", "name"), [(launches.PYTHON, "train.py"), (launches.MODULE, "train.py"),
                                           (launches.NO_PYTHON, "train.py"), (launches.RUN_PATH, "run_script_path")])
def test_the_failure_report_names_the_entrypoint_as_torch_elastic_does(how: str, name: str):
    assert launches.Launch(how).entry_name("train.py") == name


def test_a_module_traceback_has_runpys_frames_and_the_modules_file():
    trace = "\n".join(["Traceback (most recent call last):",
                       '  File "/workspace/pkg/train.py", line 236, in <module>', "    main()",
                       '  File "/workspace/pkg/train.py", line 209, in main', "RuntimeError: x"])
    module = launches.Launch(launches.MODULE)
    assert module.script_path("pkg.train") == "pkg/train.py"
    assert module.entry_frames(trace, "/workspace/pkg/train.py").split("\n")[1:4] == [
        '  File "<frozen runpy>", line 198, in _run_module_as_main',
        '  File "<frozen runpy>", line 88, in _run_code',
        '  File "/workspace/pkg/train.py", line 236, in <module>']
    assert launches.Launch().entry_frames(trace, "/workspace/pkg/train.py") == trace


def test_a_per_rank_mapping_routes_each_local_rank_on_the_console_and_in_the_files(tmp_path: Path):
    """`--tee 1:3 --redirects 0:1` (elastic/multiprocessing/api.py Std.from_str, to_map): local rank 1
    teed with its prefix, rank 0's stdout only in its file, rank 2 untouched (bare, no file)."""
    import io

    from fakerun.render.console import ConsoleSink
    from fakerun.render.lines import STDOUT, Line
    from fakerun.render.logfiles import RankLogFiles
    from fakerun.world.settings import Settings, StdMap

    routes = Settings(tee=StdMap.parse("1:3"), redirects=StdMap.parse("0:1"))
    out, err = io.StringIO(), io.StringIO()
    ConsoleSink(out, err, 3, None, settings=routes).write([Line(f"r{r}", STDOUT, r) for r in range(3)])
    assert out.getvalue() == "[default1]:r1\nr2\n"
    paths = {r: (tmp_path / f"{r}.out", tmp_path / f"{r}.err") for r in range(3)}
    logs = RankLogFiles(paths, settings=routes)
    logs.write([Line(f"r{r}", STDOUT, r) for r in range(3)])
    logs.close()
    assert [paths[r][0].read_text() for r in range(3)] == ["r0\n", "r1\n", ""]
