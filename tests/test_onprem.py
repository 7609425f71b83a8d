"""`ray up cluster-onprem.yaml` for real: three machines reached over SSH at 127.0.0.1, .2 and .3 (onprem_machines.py),
set up and started by the file's own commands, MLflow's store on a PostgreSQL server apart from them; a sweep
submitted from outside as a Ray job, its checkpoints on an S3-compatible server; a worker stopped mid-sweep, then the
head machine lost whole and a new one brought up with the same file and the same command: the sweep ends equal to a
clean run, bit for bit; `ray down` leaving nothing running."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import ROOT, benchmark
from e2e import run
from onprem_machines import Machines, available

from fixray.records.runs import NODES_TAG, ROLE_TAG, STATUS_TAG

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
chaos = benchmark("chaos")  # its comparison of a sweep's record with a clean run's
RAY = str(Path(sys.executable).with_name("ray"))
DASHBOARD = "http://127.0.0.1:8265"  # the head's dashboard and job API, bound to its 127.0.0.1 (the shared loopback)
MLFLOW = "http://127.0.0.1:5000"  # the head's MLflow server
WORKERS = ["127.0.0.2", "127.0.0.3"]
CLUSTER_PROCESSES = ("raylet", "gcs_server", "mlflow server", "dashboard", "cluster-node watch")
SWEEP = """\
name: onprem
dataset: digits
model: small_cnn
epochs: 12
batch_size: 32
seeds: [0]
search:
  space:
    kind: [dot, cosine]
    fixed: [true, false]
resources: {cpus_per_trial: 1, max_retries: 3, checkpoint_every: 1}
"""


@pytest.fixture
def machines(tmp_path):
    why = available()
    if why is not None and os.environ.get("CI") != "true":
        pytest.skip(why)
    assert why is None, why  # CI installs what the machines need (scripts/ensure-ssh)
    made = Machines(tmp_path / "machines")
    try:
        yield made
    finally:
        made.close()


def _cluster_file(path: Path, machines: Machines, storage: str, mlflow_db: str) -> Path:
    """The shipped on-prem file with its CHANGE lines filled in for these machines, this storage and this database."""
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["provider"] |= {"head_ip": machines.machines[0].ip, "worker_ips": [m.ip for m in machines.machines[1:]]}
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(machines.key)}
    config["file_mounts"]["~/fixray"] = str(ROOT)
    credentials = " ".join(
        f"{k}={os.environ[k]}" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    )
    [setup] = config["setup_commands"]
    config["setup_commands"] = [
        setup.replace("/mnt/fixray/runs", f"'{storage}' {credentials} FIXRAY_MLFLOW_DB={mlflow_db}")
    ]
    path.write_text(yaml.safe_dump(config))
    return path


def _laptop(tmp_path: Path) -> dict[str, str]:
    """The environment of the machine `ray up` runs on: its own home, with the token the cluster will share."""
    home = tmp_path / "laptop"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    return env


def _ray(args: list[str], env: dict[str, str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 or not check, f"ray {args[0]}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _nodes(machines: Machines) -> list[str]:
    """The addresses of the Ray nodes alive, asked on the head."""
    script = (
        "import json, ray; ray.init(address='auto'); "
        "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))"
    )
    found = machines.ssh(machines.machines[0].ip, f'python -c "{script}" 2>/dev/null | tail -1', check=False)
    try:
        return json.loads(found.stdout.strip() or "[]")
    except json.JSONDecodeError:
        return []


def _running(machines: Machines, ip: str) -> list[str]:
    listing = machines.ssh(ip, "ps -eo args", check=False).stdout.splitlines()
    return [line for line in listing if any(name in line for name in CLUSTER_PROCESSES) and "ps -eo" not in line]


def _wait(condition, timeout: float, what: str, every: float = 2.0, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{explain()}"
        time.sleep(every)


def _autoscaler_log(machines: Machines) -> str:
    """What the head's autoscaler did: it launches the workers over SSH (why a node did not come)."""
    logs = " ".join(f"/tmp/ray/session_latest/logs/monitor.{end}" for end in ("log", "out", "err"))
    return machines.ssh(machines.machines[0].ip, f"tail -n 60 {logs}", check=False).stdout[-8000:]


def _submit(env: dict[str, str], job_dir: Path) -> str:
    """The sweep submitted from outside, as users do (storage and MLflow from the nodes' ~/fixray.env): its job id."""
    command = ["job", "submit", "--address", DASHBOARD, "--working-dir", str(job_dir), "--no-wait", "--"]
    submitted = _ray(command + ["fixray", "sweep", "sweep.yaml", "--address", "auto"], env)
    return re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group()


def _bucket(storage: str):
    return boto3.client("s3", endpoint_url="http://" + re.search(r"endpoint_override=([^&]+)", storage)[1])


def _downloaded(storage: str, prefix: str, folder: Path) -> Path:
    """What the bucket holds under runs/PREFIX, copied into folder (as runs/...)."""
    bucket = _bucket(storage)
    for page in bucket.get_paginator("list_objects_v2").paginate(Bucket="fixray", Prefix=f"runs/{prefix}/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):  # a folder's marker
                continue
            target = folder / item["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket.download_file("fixray", item["Key"], str(target))
    return folder / "runs"


def test_ray_up_brings_up_three_machines_a_sweep_survives_a_worker_stopping_and_the_head_machine_dying(
    machines, s3_storage, postgresql, tmp_path
):
    from mlflow.tracking import MlflowClient

    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "sweep.yaml").write_text(SWEEP)
    clean = run(["sweep", "sweep.yaml"], tmp_path / "clean", timeout=600)  # the same sweep, nothing going wrong
    assert clean.returncode == 0, clean.stdout + clean.stderr

    mlflow_db = postgresql.create_database("mlflow")  # a database server apart from the cluster's machines
    env = _laptop(tmp_path)
    cluster = _cluster_file(tmp_path / "cluster.yaml", machines, s3_storage, mlflow_db)
    brought_up = _ray(["up", "-y", "--no-config-cache", str(cluster)], env)
    try:
        assert "If the head machine dies" not in brought_up.stdout + brought_up.stderr  # the store is not on it
        # Three nodes, three addresses (Ray names the head at 127.0.0.1 by this machine's own address).
        three = lambda: found if len(found := _nodes(machines)) == 3 else None  # noqa: E731
        nodes = _wait(three, 480, "three Ray nodes", explain=lambda: _autoscaler_log(machines))
        assert len(set(nodes)) == 3 and set(WORKERS) <= set(nodes)
        for machine in machines.machines:  # the cluster's secret and credentials, for this login alone
            modes = machines.ssh(machine.ip, "stat -c %a ~/.ray/auth_token ~/fixray.env").stdout.split()
            assert modes == ["600", "600"], (machine.ip, modes)
        # Token authentication: a client without the token is refused; with it, the job API answers.
        refused = _ray(["job", "list", "--address", DASHBOARD], env | {"HOME": str(tmp_path)}, check=False)
        assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()
        _ray(["job", "list", "--address", DASHBOARD], env)

        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "sweep.yaml").write_text(SWEEP)
        _submit(env, job_dir)
        client = MlflowClient(mlflow_db)  # the store itself, read apart from any head

        def epochs_logged(at_least: int):
            experiment = client.get_experiment_by_name("fixray")
            if experiment is None:
                return None
            children = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
            steps = sum(len(client.get_metric_history(c.info.run_id, "train/loss")) for c in children)
            return steps if steps >= at_least else None

        _wait(lambda: epochs_logged(1), 300, "the first epochs in MLflow", every=3)
        machines.ssh(WORKERS[1], "ray stop")  # one worker machine's Ray, stopped mid-sweep
        _wait(lambda: epochs_logged(16), 300, "a third of the sweep's epochs", every=2)
        machines.replace(machines.machines[0])  # the head machine dies whole; a new one with an empty disk
        done_before = epochs_logged(0)
        print(f"the head machine lost with {done_before} of 48 epochs in MLflow")

        # What docs/cluster.md says to do: `ray down` (the local provider's record on this laptop still holds the dead
        # head as set up: `ray up` alone would skip its setup), `ray up` with the same file, the same command again.
        _ray(["down", "-y", str(cluster)], env, check=False)
        _ray(["up", "-y", "--no-config-cache", str(cluster)], env)
        job = _submit(env, job_dir)

        def ended():
            found = _ray(["job", "status", "--address", DASHBOARD, job], env, check=False)
            ended = re.search(rf"Job '{job}' (succeeded|failed|stopped)", found.stdout + found.stderr)
            return ended.group(1) if ended else None

        status = _wait(ended, 900, "the resumed sweep job's end", every=5)
        found = _ray(["job", "logs", "--address", DASHBOARD, job], env)
        logs = found.stdout + found.stderr
        assert status == "succeeded", logs[-4000:]
        assert "Resuming the sweep" in logs and "trials 4/4 done" in logs  # the live view reaches `ray job logs`
        assert done_before < 48, "the head died after the sweep's end: nothing was resumed"
        # Every trial finished once, every epoch once, metrics and final weights equal to the clean run's.
        found_runs = chaos.histories(mlflow_db, "onprem")
        weights = chaos.final_weights(_downloaded(s3_storage, "onprem", tmp_path / "bucket"), "onprem")
        clean_runs = chaos.histories(f"sqlite:///{tmp_path / 'clean' / 'mlflow.db'}", "onprem")
        clean_weights = chaos.final_weights(tmp_path / "clean" / "fixray-runs", "onprem")
        assert len(clean_runs) == 4 and len(weights) == 4
        assert chaos.compare(clean_runs, found_runs, clean_weights, weights, 12) == {
            "lost": 0,
            "duplicated": 0,
            "not_finished": 0,
            "differing": 0,
        }
        experiment = client.get_experiment_by_name("fixray")
        children = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
        assert all(c.data.tags.get(NODES_TAG) for c in children)

        # A shipped sweep file as it is, submitted the way docs/cluster.md says: its runs land on the head's server
        # (the file names no store), not in the job's temporary working directory.
        shipped = ["job", "submit", "--address", DASHBOARD, "--working-dir", str(ROOT / "sweeps"), "--"]
        quickstart = _ray(shipped + ["fixray", "sweep", "quickstart.yaml", "--address", "auto"], env)
        assert "succeeded" in quickstart.stdout + quickstart.stderr, (quickstart.stdout + quickstart.stderr)[-4000:]
        parent = client.search_runs(
            [experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'sweep' and attributes.run_name = 'quickstart'"
        )
        assert len(parent) == 1
        landed = client.search_runs(
            [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'", max_results=100
        )
        assert len(landed) == 24 and {c.data.tags[STATUS_TAG] for c in landed} == {"finished"}
        # MLflow's artifacts (the sweep's report) are in the sweep's bucket, not on the head's disk.
        held = _bucket(s3_storage).list_objects_v2(Bucket="fixray", Prefix="runs/mlflow-artifacts/")
        assert any(item["Key"].endswith("/report.md") for item in held.get("Contents", [])), held
    finally:
        _ray(["down", "-y", str(cluster)], env, check=False)
    # Nothing of the cluster keeps running on any machine (the workers' Ray and the head's MLflow stop once the
    # head's Ray is gone: a few checks apart).
    for machine in machines.machines:
        _wait(lambda ip=machine.ip: not _running(machines, ip), 120, f"the cluster's processes on {machine.ip} to end")
    shutil.rmtree(tmp_path / "laptop", ignore_errors=True)
