"""The plan's bounds (RunConfig.bounds, sim.bounds) hold every figure a rank
of that plan reports: the coordinator, which refuses anything beyond them,
never refuses a rank of the job (issue 16: `--per_device_train_batch_size
99999999999` was refused as out of range, and the job waited for the watchdog)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fakerun import protocol as p
from fakerun.cli.main import build_parser, to_config
from fakerun.coordinator.core import Coordinator, JobSpec
from fakerun.protocol.messages import rank_routing_id
from fakerun.rank.training import Script
from fakerun.world import physics as sim


class Recorder:
    """A Communicator that releases every collective at once (each rank alone)
    and records what the rank reported."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.welcomed = (0.0, 0.0)  # (monotonic, run clock) at the Welcome: what pacing starts from
        self.contributions: list[tuple[str, float, int]] = []  # (tag, sim_s, numel)
        self.telemetry: list[Any] = []

    def all_reduce(self, values, op="sum", *, tag="", step=0, numel=0, sim_s=0.0, comm="world"):
        self.contributions.append((tag, sim_s, numel or len(values)))
        return values

    def broadcast(self, values, root=0, *, tag="", numel=0, comm="world"):
        self.contributions.append((tag, 0.0, numel or len(values)))
        return values

    def barrier(self, *, tag="", sim_s=0.0, comm="world"):
        self.contributions.append((tag, sim_s, 0))

    def send(self, msg):
        self.telemetry.append(msg)


def config(*argv: str):
    return to_config(build_parser().parse_args(["--speed", "0", *argv]), environ={})


SLOW = "slow.toml"
PLANS = [
    ("--nproc", "2", "--seed", "3"),
    ("--nproc", "8", "--seed", "11", "--max-steps", "40", "--scenario", "straggler", "--fail-step", "2"),
    ("--nproc", "1", "--seed", "5", "--max-steps", "30", "--scenario", "loss-spike"),
    ("--nproc", "2", "--max-steps", "5", "--scenario", SLOW, "--fail-step", "1", "--fail-rank", "0"),
    # Recomputing: 64 x 1024 tokens' activations fit no GPU under the Trainer's DDP without it.
    ("--nproc", "2", "--max-steps", "5", "train.py", "--per_device_train_batch_size", "64",
     "--max_seq_length", "1024", "--gradient_checkpointing"),
    ("--nproc", "2", "--max-steps", "5", "train.py", "--gradient_accumulation_steps", "10000"),
    ("--nproc", "4", "--max-steps", "5", "pretrain_gpt.py", "--num-layers", "1", "--hidden-size", "1",
     "--seq-length", "1"),
]


@pytest.mark.parametrize("argv", PLANS)
def test_every_figure_a_rank_reports_is_within_its_plan_s_bounds(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / SLOW).write_text('fault = "slow"\nfactor = 1000\n')
    c = config(*argv)
    b = c.bounds
    for rank in range(c.topology.world_size):
        comm = Recorder()
        Script(comm, rank, c, c.identity).run()
        assert max(s for _, s, _ in comm.contributions) <= b.sim_s
        assert max(n for _, _, n in comm.contributions) <= b.numel
        assert sum(s for _, s, _ in comm.contributions) <= b.run_s
        assert all(t.power_w <= b.power_w and t.mem_used_mib <= b.memory_mib for t in comm.telemetry)


def test_the_slowest_step_is_the_bound_of_every_step():
    """compute_seconds over many steps never passes slowest_step_seconds
    (the MFU's jitter is a bounded draw: |gauss| <= GAUSS_MAX)."""
    ident = config("--nproc", "2", "--seed", "1").identity
    worst = sim.slowest_step_seconds(ident)
    assert max(sim.compute_seconds(ident, s) for s in range(1, 20000)) <= worst
    assert sim.gauss(0, "x") <= sim.GAUSS_MAX


def test_the_coordinator_accepts_every_contribution_of_the_plan_and_nothing_past_it():
    c = config("--nproc", "1", "--max-steps", "4", "train.py", "--gradient_accumulation_steps", "10000")
    core = Coordinator(JobSpec(c.run_id, "t", 1, bounds=c.bounds), 600.0, lambda: 0.0)
    core.handle(rank_routing_id(0), p.encode(p.Hello(0, 0, 0, 1, c.run_id, "t", {})), 0.0)
    comm = Recorder()
    Script(comm, 0, c, c.identity).run()
    for seq, (tag, sim_s, numel) in enumerate(comm.contributions, 1):
        frame = p.encode_contribute(0, "world", seq, "barrier", "", 0, "float32", [], tag, 0, numel, sim_s)
        assert core.handle(rank_routing_id(0), frame, 0.0).replies, (tag, sim_s, numel)
    for t in comm.telemetry:
        core.handle(rank_routing_id(0), p.encode(t), 0.0)
    assert not core.rejected
    past = p.encode_contribute(0, "world", len(comm.contributions) + 1, "barrier", "", 0, "float32", [], "",
                               0, 0, c.bounds.sim_s * 1.001)
    core.handle(rank_routing_id(0), past, 0.0)
    assert dict(core.rejected) == {"out-of-range": 1}


@pytest.mark.parametrize("argv,says", [
    (("--nproc", "2", "train.py", "--gradient_accumulation_steps", "1000000"),
     "tokens per optimizer step (the script's batch arguments): more than any real job takes"),
    (("--nproc", "1", "--max-steps", "1000000", "train.py", "--model_name_or_path", "Qwen/Qwen2.5-1.5B",
      "--gradient_accumulation_steps", "100000"), "years of simulated time, past the calendar's end"),
    (("--nproc", "2", "train.py", "--per_device_train_batch_size", "99999999999"),
     "does not fit on 2 x"),
])
def test_a_plan_no_job_could_have_is_refused_in_one_line(argv, says):
    from fakerun.errors import UsageError

    with pytest.raises(UsageError) as caught:
        config(*argv)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_largest_plan_fakerun_draws_by_itself_has_at_most_the_token_bound():
    """MAX_TOKENS_PER_STEP is 2^17 ranks x micro batch 8 x 4096 tokens."""
    from fakerun.config.options import MAX_TOKENS_PER_STEP
    from fakerun.world.topology import MAX_WORLD

    assert MAX_WORLD * 8 * 4096 == MAX_TOKENS_PER_STEP



@pytest.mark.parametrize("body,says", [
    ("factor = 1e13", "factor must be at most 1000, got 1e+13"),  # time.sleep overflowed in the rank
    ("factor = inf", "factor must be a positive number"),
    ("factor = nan", "factor must be a positive number"),
    ("factor = 1000", None),
])
def test_a_straggler_is_at_most_a_thousand_times_slower(tmp_path, body, says):
    from fakerun.config import scenario as scenarios

    path = tmp_path / "slow.toml"
    path.write_text(f'fault = "slow"\n{body}\n')
    if says is None:
        assert scenarios.resolve(str(path)).params == {"factor": 1000.0}
        return
    with pytest.raises(scenarios.ScenarioError, match=re.escape(says)):
        scenarios.resolve(str(path))


NUMBERS = st.one_of(
    st.sampled_from(("0", "-1", "1", "8", "64", "4096", "99999999999", "9" * 30, "1e308", "inf", "nan", "1_000",
                     "١٢", "²", "0.5", "", "9" * 400, "9223372036854775807", "-9223372036854775808")),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats().map(repr),
)
FLAGS = {"hf": ("per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "block_size",
                "learning_rate", "num_train_epochs", "logging_steps", "max_steps"),
         "megatron": ("num-layers", "hidden-size", "num-attention-heads", "num-query-groups", "seq-length",
                      "micro-batch-size", "global-batch-size", "lr", "log-interval", "train-iters")}
NAMES = st.sampled_from(("llama-0b", "llama-1e400b", "gpt2", "Qwen/Qwen2.5-72B", "x-" + "9" * 400 + "m", "7b"))


@st.composite
def script_lines(draw):
    style = draw(st.sampled_from(sorted(FLAGS)))
    flags = draw(st.lists(st.sampled_from(FLAGS[style]), min_size=1, max_size=4, unique=True))
    args = [a for f in flags for a in (f"--{f}", draw(NUMBERS))]
    if style == "hf" and draw(st.booleans()):
        args += ["--model_name_or_path", draw(NAMES)]
    return ["train.py" if style == "hf" else "pretrain_gpt.py", *args]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(nproc=st.sampled_from((1, 2, 8)), line=script_lines())
# Found by this property: argparse's usage block under the name `__main__.py`.
@example(nproc=1, line=["train.py", "--learning_rate", "-inf"])
@example(nproc=2, line=["train.py", "--per_device_train_batch_size", "99999999999"])  # the 600 s wait
def test_any_script_arguments_give_a_plan_within_its_bounds_or_one_line(nproc, line):
    """In process, so many draws are cheap: the refusal is a UsageError of
    one line (cli.main prints it, exit 2), and a plan that passes has every
    figure its ranks report within the bounds the coordinator holds them to."""
    from fakerun.errors import UsageError

    try:
        c = config("--nproc", str(nproc), "--max-steps", "3", *line)
    except UsageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)
        return
    b = c.bounds
    for rank in {0, nproc - 1}:
        comm = Recorder()
        Script(comm, rank, c, c.identity).run()
        assert max(s for _, s, _ in comm.contributions) <= b.sim_s
        assert max(n for _, _, n in comm.contributions) <= b.numel
        assert all(t.power_w <= b.power_w and t.mem_used_mib <= b.memory_mib for t in comm.telemetry)
