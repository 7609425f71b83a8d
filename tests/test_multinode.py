"""Sweeps on a real multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head and two worker nodes, each
declaring its own CPUs and a GPU) with their storage on a real S3-compatible server: a DDP trial spreads its
two workers over both nodes; trials pack four to a GPU, run on both nodes, and when a node is removed
mid-sweep its trials are rescheduled, resume from their last checkpoint, and finish, with MLflow intact."""

import os
import subprocess
import time

import pytest
from e2e import FIXRAY, run, steps, store, tune_results
from ray.cluster_utils import Cluster

from fixray.records.runs import NODES_TAG, RESOURCES_TAG, STATUS_TAG, TRIAL_TAG
from fixray.trial.device import CPU_FOR_DECLARED_GPUS

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PACKED = """\
name: nodes
dataset: digits
model: small_cnn
epochs: 12
batch_size: 64
seeds: [0, 1]
resources: {{cpus_per_trial: 0.5, gpus_per_trial: 0.25, max_retries: 3, checkpoint_every: 1}}  # resumes past epoch 1
storage_path: '{storage}'
search:
  space:
    fixed: [true, false]
"""
SPREAD = """\
name: spread
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
resources: {{workers: 2, cpus_per_trial: 2}}
storage_path: '{storage}'
search:
  space:
    fixed: [true]
"""


def _training_on(cwd) -> set[str]:
    """The nodes that trials still running have trained two or more epochs on, by the MLflow store."""
    if not (cwd / "mlflow.db").exists():
        return set()
    client, _, children = store(cwd)
    return {
        c.data.tags[NODES_TAG]
        for c in children
        if NODES_TAG in c.data.tags and STATUS_TAG not in c.data.tags and len(steps(client, c, "train/loss")) >= 2
    }


def test_trials_pack_on_gpus_spread_over_nodes_and_survive_losing_one(tmp_path, s3_storage, monkeypatch):
    # The nodes' GPUs are declared by hand: their trials train on the CPU, asked for by name (the nodes this process
    # starts inherit it). With the S3 server's credentials (the fixture's).
    monkeypatch.setenv(CPU_FOR_DECLARED_GPUS, "1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node trains nothing
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    worker_ids = {w.node_id for w in workers}
    try:
        (tmp_path / "spread.yaml").write_text(SPREAD.format(storage=s3_storage))
        spread = run(["sweep", "spread.yaml", "--address", cluster.address], tmp_path, env=env)
        assert spread.returncode == 0, spread.stdout + spread.stderr
        client, _, (ddp,) = store(tmp_path)
        assert set(ddp.data.tags[NODES_TAG].split(",")) == worker_ids  # its two workers on two nodes
        assert sorted(a.path for a in client.list_artifacts(ddp.info.run_id, "figures")), "figures lost on S3"

        (tmp_path / "s.yaml").write_text(PACKED.format(storage=s3_storage))
        sweep = subprocess.Popen(
            FIXRAY + ["sweep", "s.yaml", "--address", cluster.address],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while True:  # until unfinished trials train on both worker nodes, a few epochs in (as MLflow has it)
            seen = _training_on(tmp_path)
            if seen >= worker_ids:
                break
            assert sweep.poll() is None and time.monotonic() < deadline, f"trials never ran on both nodes: {seen}"
            time.sleep(0.5)
        lost = workers[0]
        cluster.remove_node(lost, allow_graceful=False)  # the node is gone, with its trials' processes
        output = sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 0, output
    finally:
        cluster.shutdown()

    client, parents, children = store(tmp_path)
    children = [c for c in children if c.info.run_id != ddp.info.run_id]
    assert len(parents) == 2 and len(children) == 4
    for child in children:
        assert child.data.tags[STATUS_TAG] == "finished"
        assert steps(client, child, "train/loss") == list(range(1, 13)), "an epoch lost or logged twice"
        assert child.data.tags[RESOURCES_TAG] == "CPU 0.5, GPU 0.25"  # four trials to one GPU
    nodes = {child.data.tags[TRIAL_TAG]: child.data.tags[NODES_TAG].split(",") for child in children}
    moved = {trial for trial, on in nodes.items() if on[0] == lost.node_id}
    assert moved and all(nodes[t] == [lost.node_id, workers[1].node_id] for t in moved), nodes  # rescheduled
    # Each moved trial resumed from a checkpoint: its first report on the new node is past epoch 1.
    first_after_move = {}
    for report in tune_results(tmp_path, "nodes", s3_storage):
        if report["node_ids"] == workers[1].node_id:
            first_after_move.setdefault(report["trial_id"], report["epoch"])
    assert all(first_after_move[t] > 1 for t in moved), first_after_move
    assert not (tmp_path / "fixray-runs").exists()  # everything went to the bucket
