"""--metrics-port: a running job scraped as Prometheus scrapes dcgm-exporter,
read back with Prometheus's own text parser and checked against the job's
telemetry events; a port that is not free stops the job before any rank."""

from __future__ import annotations

import signal
import socket
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from fakerun.config.options import free_port
from fakerun.dcgm.counters import pinned
from tests.conftest import wait_until

# Paced, so the run's clock (and the exporter's collections) go on while
# every rank hangs at step 21, just after the GPU report of step 20.
HUNG = ("--nproc", "2", "--max-steps", "40", "--seed", "3", "--speed", "1000", "--scenario", "hang",
        "--fail-step", "21", "--collective-timeout", "3600", "--output", "jsonl", "--gpu", "NVIDIA H100 80GB HBM3")


def scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def per_gpu(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(family.name, {})[s.labels["gpu"]] = s.value
    return out


def energy_of(text: str) -> dict[str, float]:
    return per_gpu(text).get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", {})


def next_collection(port: int, energy: dict[str, float]) -> Callable[[], str | None]:
    """A scrape from a collection after the one whose energy is `energy` (each adds some)."""
    def probe() -> str | None:
        text = scrape(port)[1]
        return text if energy_of(text) != energy else None
    return probe


def test_a_running_job_is_scraped_as_dcgm_exporter_and_agrees_with_its_telemetry(runner):
    port = free_port()
    job = runner.start(*HUNG, "--metrics-port", str(port))
    status = job.wait_for_event("gpu_status", step=20)[0]
    ident = job.of("run_identity")[0]["identity"]
    reported = {str(g["local"]): g for g in status["gpus"]}
    # The agent's sinks had the report when its line came out: the next
    # collection (its energy moves) is the first to read the hung GPUs.
    seen = energy_of(scrape(port)[1])
    text = wait_until(next_collection(port, seen), 30)
    kind, _ = scrape(port)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counters = {c.name: c.prom_type for c in pinned().counters}
    assert kind == "text/plain; charset=utf-8"
    assert {f.name: f.type for f in families.values()} == counters
    labels = families["DCGM_FI_DEV_GPU_UTIL"].samples[0].labels
    assert list(labels) == ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["UUID"].startswith("GPU-")
    assert labels["DCGM_FI_DRIVER_VERSION"] == ident["versions"]["driver"]
    v = per_gpu(text)
    for gpu, g in reported.items():
        assert v["DCGM_FI_DEV_GPU_UTIL"][gpu] == g["util"]
        assert v["DCGM_FI_DEV_GPU_TEMP"][gpu] == g["temp_c"] and v["DCGM_FI_DEV_FB_USED"][gpu] == g["mem_used_mib"]
        assert int(v["DCGM_FI_DEV_POWER_USAGE"][gpu]) == g["power_w"]
        assert v["DCGM_FI_DEV_FB_USED"][gpu] + v["DCGM_FI_DEV_FB_FREE"][gpu] < g["mem_total_mib"]
        assert v["DCGM_FI_DEV_XID_ERRORS"][gpu] == 0
    # The clock goes on through the hang: later collections add the power shown times the time between.
    energy = v["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
    later = per_gpu(wait_until(next_collection(port, energy), 30))
    for gpu, power in v["DCGM_FI_DEV_POWER_USAGE"].items():
        added = (later["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"][gpu] - energy[gpu]) / 1000.0
        intervals = added / (power * 30.0)
        assert abs(intervals - round(intervals)) < 1e-3 and round(intervals) >= 1, intervals
    job.kill(signal.SIGTERM)
    job.wait(60)
    with socket.socket() as s:  # gone with the agent
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_is_one_line_and_exit_2_before_any_rank_starts(runner):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = runner.run("--nproc", "2", "--max-steps", "2", "--speed", "0", "--output", "jsonl",
                         "--gpu", "NVIDIA A100-SXM4-80GB", "--metrics-port", str(port))
    assert job.proc.returncode == 2
    assert job.stderr == f"fakerun: error: --metrics-port {port} on 127.0.0.1: Address already in use\n"
    assert job.events() == []
