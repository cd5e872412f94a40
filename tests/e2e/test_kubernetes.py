"""The Kubernetes example: examples/kubernetes/pytorchjob.yaml's two pods,
each running its container's command (`torchrun`: fakerun under that name,
as the image installs it) with exactly the environment the training operator
gives it, join one job with the right ranks; the image's Dockerfile installs
what runs here."""

from __future__ import annotations

from fakerun.config.options import free_port

from . import kube
from .test_dropin import torchrun_on_path

JOB_NAME_LABEL = "metadata.labels['training.kubeflow.org/job-name']"  # common_types.go JobNameLabel
# What would make a pod's launch differ from the operator's contract: the test's own environment.
FOREIGN = ("PET_", "MASTER_", "SLURM_", "FAKERUN_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NCCL_", "LOGLEVEL")


def test_the_manifest_is_a_pytorchjob_with_a_master_and_a_worker_running_torchrun():
    """yaml, where installed, reads the manifest as the tests' reader does."""
    job = kube.manifest()
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert {r: s["replicas"] for r, s in job["spec"]["pytorchReplicaSpecs"].items()} == {"Master": 1, "Worker": 1}
    for replica in ("Master", "Worker"):
        c = kube.container(job, replica)
        assert c["command"][0] == "torchrun" and c["command"][-1] == "train.py"
        assert [p["name"] for p in c["ports"]] == ["pytorchjob-port"]  # where the operator reads MASTER_PORT
    try:
        import yaml
    except ImportError:
        return
    assert yaml.safe_load(kube.MANIFEST.read_text(encoding="utf-8")) == job


def test_the_image_installs_fakerun_as_torchrun():
    text = (kube.MANIFEST.parent / "Dockerfile").read_text(encoding="utf-8")
    assert "ln -s fakerun /usr/local/bin/torchrun" in text and 'ENTRYPOINT ["torchrun"]' in text


def pod(job: dict, replica: str, port: int, token: str, machine: dict[str, str]) -> dict[str, str]:
    """The pod's environment, on a `machine` whose PATH has torchrun as the image has it."""
    base = {k: v for k, v in machine.items() if not k.startswith(FOREIGN)}
    values = {("secretKeyRef", "fakerun-token", "token"): token, ("fieldRef", JOB_NAME_LABEL): job["metadata"]["name"]}
    env = base | kube.pod_env(job, replica, values) | kube.operator_env(job, replica, 0, "127.0.0.1", port)
    env["FAKERUN_OPTS"] += " --speed 0 --max-steps 3 --output jsonl"  # fast, and read as events
    return env


def test_the_master_and_worker_pods_join_one_job(runner, tmp_path):
    job, port = kube.manifest(), free_port()
    machine = torchrun_on_path(tmp_path)
    pods, marker = {}, runner.new_marker()  # one job: the same script line on both nodes
    for replica in ("Master", "Worker"):
        args = kube.container(job, replica)["command"][1:-1]  # the runner names train.py, with its marker
        pods[replica] = runner.start(*args, command=["torchrun"], script_marker=True, marker=marker, cwd=tmp_path,
                                     env=pod(job, replica, port, "pod-token", machine))
    for started in pods.values():
        started.wait(90)
    for replica, started in pods.items():
        assert started.proc.returncode == 0, (replica, started.stderr[-2000:])
    for node, replica in enumerate(("Master", "Worker")):
        [run] = pods[replica].of("run_started")
        assert (run["world_size"], run["nnodes"], run["nproc_per_node"], run["node_rank"]) == (4, 2, 2, node)
        assert [e["rank"] for e in pods[replica].of("rank_exited")] == [2 * node, 2 * node + 1]  # its own
    started = {e["rank"]: e["env"] for e in pods["Master"].of("rank_started")}  # node 0 sees every rank
    assert sorted(started) == [0, 1, 2, 3]
    for rank, env in started.items():
        # The operator's RANK and WORLD_SIZE count pods; torchrun gives its workers their own.
        assert (env["RANK"], env["GROUP_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == (
            str(rank), str(rank // 2), "4", "2")
        assert env["TORCHELASTIC_RUN_ID"] == job["metadata"]["name"]  # PET_RDZV_ID, the job's name
        # The master's --master-addr 0.0.0.0 (listening on every interface) over its PET_MASTER_ADDR;
        # the worker's is PET_MASTER_ADDR, where the Service name would be.
        assert env["MASTER_ADDR"] == ("0.0.0.0" if rank < 2 else "127.0.0.1")
    assert [e["step"] for e in pods["Master"].of("step")] == [1, 2, 3]
