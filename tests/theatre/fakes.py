"""Stand-ins for the theatre's panes, and a driver that runs the theatre.

    python fakes.py node LOG TITLE MARKER [--exit CODE --after S] [--stubborn] [--child]
    python fakes.py dashboard LOG MARKER [--after S]
    python fakes.py summary K MARKER
    python fakes.py stage SPEC.json

Each fake appends what happened to it to LOG (one word a line), so a test can
tell that every node ran and got its SIGINT after the panes are gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty


def note(log: str, word: str) -> None:
    with open(log, "a") as out:
        out.write(word + "\n")


def lifeline_gone() -> bool:
    pid = int(os.environ.get("FAKERUN_LIFELINE", "0"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def option(args: list[str], name: str, default: float | None = None) -> float | None:
    return float(args[args.index(name) + 1]) if name in args else default


def node(args: list[str]) -> int:
    log, title = args[0], args[1]
    child = None
    if "--child" in args:  # a rank: its own session, as fakerun's ranks are (os.setsid)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *args[2:3]],
                                 start_new_session=True)
    stubborn = "--stubborn" in args

    def on_sigint(_sig, _frame):
        note(log, f"{title} sigint")
        if not stubborn:
            print(f"{title}: shutting down", flush=True)
            sys.exit(130)

    def on_hangup(sig, _frame):  # as an agent does: its ranks go with it
        if child:
            child.kill()
        sys.exit(128 + sig)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGHUP, on_hangup)
    signal.signal(signal.SIGTERM, on_hangup)
    print(f"{title}: agent up, token {os.environ.get('FAKE_TOKEN', '-')}", flush=True)
    note(log, f"{title} up")
    end = time.monotonic() + option(args, "--after", 1e9)
    step = 0
    while time.monotonic() < end and not lifeline_gone():
        print(f"{title}: step {step}", flush=True)
        step += 1
        time.sleep(0.2)
    if child:
        child.kill()
    code = int(option(args, "--exit", 0))
    print(f"{title}: exiting {code}", flush=True)
    return code


def dashboard(args: list[str]) -> int:
    log = args[0]
    print("dashboard: press q to quit", flush=True)
    note(log, "dashboard up")
    old = termios.tcgetattr(0)
    tty.setcbreak(0)
    try:
        end = time.monotonic() + option(args, "--after", 1e9)
        while time.monotonic() < end:
            ready, _, _ = select.select([0], [], [], 0.2)
            if ready and os.read(0, 1) == b"q":
                note(log, "dashboard q")
                return 0
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, old)
    return 0


def summary(args: list[str]) -> int:
    print(f"summary: nodes {args[0]}.. run out of sight", flush=True)
    while not lifeline_gone():
        time.sleep(0.2)
    return 0


def stage(args: list[str]) -> int:
    from fakerun import theatre

    with open(args[0]) as f:
        spec = json.load(f)
    os.environ["TMPDIR"] = spec["tmpdir"]  # where the test finds the private socket
    os.environ.pop("XDG_RUNTIME_DIR", None)  # which would come first
    with open(spec["pid_file"], "w") as out:
        out.write(str(os.getpid()))
    pane = lambda p: theatre.Pane(p["title"], p["argv"], p.get("env", {}))  # noqa: E731
    summary_argv = spec.get("summary")
    show = theatre.Stage(
        nodes=[pane(p) for p in spec["nodes"]], dashboard=pane(spec["dashboard"]),
        summary=(lambda k: theatre.Pane("summary", [a.replace("{K}", str(k)) for a in summary_argv]))
        if summary_argv else None,
        name=spec["name"])
    code = theatre.run(show, os.environ, grace_s=spec.get("grace", 10.0))
    with open(spec["rc_file"], "w") as out:
        out.write(str(code))
    return code


if __name__ == "__main__":
    sys.exit({"node": node, "dashboard": dashboard, "summary": summary, "stage": stage}[sys.argv[1]](sys.argv[2:]))
