"""--style hf's tqdm bar, end to end, against the real tqdm and torch's tee.

The run's own step events (JSONL) give the moments at which the Trainer's
ProgressCallback calls tqdm: opened at the train phase, update(1) at each
step's end, write() for each log dict (logging steps, the evaluation's, the
summary's), close() at the end. The real tqdm (the [test] extra's), driven
with those times, writes what rank 0's stderr must hold: without --tee the
worker's stream reaches the console as it is, `\\r` and all, with only the
Trainer's whole logger lines between tqdm's writes; with --tee 3 the console
shows what torch's tail_logfile makes of those same writes."""

from __future__ import annotations

from tests.e2e.test_simulation import FIXED, clean_env
from tests.unit.test_tqdm_bar import HEADER, real_tqdm, torch_tee

ARGS = (*FIXED, "--nproc", "2", "--max-steps", "12", "--style", "hf", "--local-ranks-filter", "0")


def run(runner, *args: str):
    job = runner.start(*ARGS, *args, env=clean_env())
    assert job.wait() == 0, job.stderr
    return job


def trainer_moments(monkeypatch, events: list[dict]) -> list[str]:
    """What the real tqdm writes to stderr at each of the Trainer's moments."""
    clock = [0.0]
    tqdm, err = real_tqdm(monkeypatch, clock)
    every, batches = hyper(events)["log_every"], hyper(events)["eval_batches"]
    moments, seen, bar, eval_start = [], 0, None, 0.0

    def moment() -> None:
        nonlocal seen
        if len(err.getvalue()) > seen:
            moments.append(err.getvalue()[seen:])
            seen = len(err.getvalue())

    for e in events:
        clock[0] = e.get("time", clock[0])
        if e["event"] == "phase" and e["name"] == "train":
            bar = tqdm(total=hyper(events)["total_steps"], dynamic_ncols=True)
        elif e["event"] == "phase" and e["name"] == "validation":
            eval_start = e["time"]
        elif e["event"] == "step":
            bar.update(1)
            if e["step"] % every == 0:
                bar.write("{'loss': ...}")
        elif e["event"] == "validation":
            # evaluation_loop's on_prediction_step after each batch (fakerun spreads them evenly)
            prediction = None
            for k in range(1, batches + 1):
                clock[0] = eval_start + e["eval_time_s"] * k / batches
                if prediction is None:
                    prediction = tqdm(total=batches, leave=bar is None, dynamic_ncols=True)
                prediction.update(1)
                moment()
            clock[0] = e["time"]
            bar.write("{'eval_loss': ...}")  # Trainer.evaluate logs, then on_evaluate closes the bar
            prediction.close()
        elif e["event"] == "summary":
            bar.write("{'train_runtime': ...}")
            bar.close()
        moment()
    return moments


def identity(events: list[dict]) -> dict:
    return next(e for e in events if e["event"] == "run_identity")["identity"]


def hyper(events: list[dict]) -> dict:
    return identity(events)["hyper"]


def split_at(stream: str, moments: list[str]) -> list[str]:
    """`stream` cut into the tqdm moments, in order, and the text between them,
    which must be whole lines of the Trainer's logger (no `\\r`)."""
    pieces, at = [], 0
    for moment in moments:
        found = stream.find(moment, at)
        assert found >= 0, f"tqdm's write {moment!r} is not in the stream after {stream[at - 200:at]!r}"
        between = stream[at:found]
        assert "\r" not in between and (not between or between.endswith("\n")), between
        pieces += [p for p in (between, moment) if p]
        at = found + len(moment)
    return pieces



def test_without_tee_the_workers_stderr_is_tqdms_bytes(runner, monkeypatch):
    events = run(runner, "--output", "jsonl").events()
    moments = trainer_moments(monkeypatch, events)
    assert len(moments) >= 12  # 18 s steps: a redraw at every one
    bare = run(runner, "--output", "plain", "--tee", "0")
    stream = bare.err_path.read_bytes().decode()
    start = stream.index("***** Running training *****")
    split_at(stream[start:], moments)


def test_under_tee_each_redraw_is_a_prefixed_line_as_tail_logfile_prints_it(runner, monkeypatch):
    events = run(runner, "--output", "jsonl").events()
    moments = trainer_moments(monkeypatch, events)
    bare = run(runner, "--output", "plain", "--tee", "0").err_path.read_bytes().decode()
    start = bare.index("***** Running training *****")
    end = bare.index(moments[-1], start) + len(moments[-1])
    # The reader catches up after each moment: tqdm's writes of one, or the logger's lines between.
    expected = torch_tee(identity(events)["versions"]["torch"], split_at(bare[start:end], moments))
    teed = run(runner, "--output", "plain", "--tee", "3").err_path.read_bytes().decode()
    assert expected.startswith(f"{HEADER}***** Running training *****\n")
    assert expected in teed
    # A redraw found mid-line by the reader: the next read's header follows the bar.
    assert "s/it][default0]:\n" in teed


def test_the_log_dir_file_holds_the_workers_bytes(runner, monkeypatch, tmp_path):
    events = run(runner, "--output", "jsonl").events()
    moments = trainer_moments(monkeypatch, events)
    run(runner, "--output", "plain", "--log-dir", str(tmp_path), "--redirects", "3")
    [log] = tmp_path.glob("*/attempt_0/0/stderr.log")  # torchrun's <log_dir>/<run>/attempt_N/<local rank>/
    stream = log.read_bytes().decode()
    split_at(stream[stream.index("***** Running training *****"):], moments)
