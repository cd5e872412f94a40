"""Any value of a numeric or time option (hypothesis): the job runs (exit 0),
or fakerun refuses it with one `fakerun: error:` line and exit 2, within a
bounded time, with nothing left running and nothing written in the working
directory. A tiny collective or rendezvous timeout may also trip, as NCCL's
watchdog or the rendezvous would: exit 1 with that message (issue 16).

Every job is bounded: two steps at --speed 0, and --exit-after-time 5s
stops a slow --speed drawn by the test. --max-steps, --nnodes, --node-rank
and --nodes have their own tests (a valid value there is a long run or a
node waiting for others, not a refusal)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Runner

OPTIONS = ("--nproc", "--master-port", "--max-restarts", "--node-timeout", "--seed", "--speed",
           "--exit-after-time", "--collective-timeout", "--rdzv-timeout", "--fail-rank", "--fail-step",
           "--start-time", "--lifeline", "--rdzv-endpoint", "--local-ranks-filter", "--tee")
HOSTILE = ("0", "-1", "1e999", "-1e999", "nan", "inf", "99999999999999999999", "²", "١٢", "1.5", "", " 3",
           "0x10", "1_000", "9" * 400, "2026-01-30T14:23:15", "9999-12-31T23:59:59", "1h2m", "localhost:0")
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.-e²١", max_size=8),
)
TRIPPED = ("Watchdog caught collective operation timeout", "rendezvous timed out")
BOUND_S = 40


def _job(runner: Runner, option: str, value: str, cwd: Path):
    return runner.start("--nproc", "2", "--max-steps", "2", "--speed", "0", "--exit-after-time", "5s",
                        "--output", "jsonl", f"{option}={value}", cwd=cwd,
                        env={**os.environ, "FAKERUN_OPTS": ""})


@settings(max_examples=24, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS), value=VALUES)
# Each of these was a traceback once: always tried, before the drawn ones.
@example(option="--start-time", value="9999-12-31T23:59:59")
@example(option="--speed", value="1e-300")
@example(option="--lifeline", value="9" * 20)
@example(option="--rdzv-endpoint", value="9" * 70)
def test_any_value_runs_or_is_refused_in_one_line(runner, tmp_path, option, value):
    cwd = tmp_path / f"cwd-{len(runner.jobs)}"
    cwd.mkdir()
    job = _job(runner, option, value, cwd)
    code = job.wait(BOUND_S)
    said = job.stderr
    where = f"{option}={value!r}: exit {code}: {said[-1500:]}"
    assert "Traceback" not in said or "torch/distributed" in said.split("Traceback", 1)[1][:400], where
    if code == 2:
        assert said.strip().splitlines()[-1].startswith("fakerun: error:"), where
        assert not said.startswith(("W", "E", "I")), where  # refused before the launcher spoke
    elif code == 1:
        assert any(t in said for t in TRIPPED), where
    else:
        assert code == 0, where
    assert list(cwd.iterdir()) == [], f"{where}: wrote {list(cwd.iterdir())}"
