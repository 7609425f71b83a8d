"""A sweep on a real multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head and two worker nodes, each
declaring its own CPUs and a GPU): trials pack four to a GPU, run on both nodes, and when a node is removed
mid-sweep its trials are rescheduled, resume from their last checkpoint, and finish, with MLflow intact."""

import subprocess
import time

import pytest
from ray.cluster_utils import Cluster
from test_sweep_e2e import ENV, FIXRAY, steps, store, tune_results

from fixray.tracking import NODES_TAG, RESOURCES_TAG, STATUS_TAG

pytestmark = pytest.mark.slow

PACKED = """\
name: nodes
dataset: digits
model: small_cnn
epochs: 8
batch_size: 64
seeds: [0, 1]
resources: {cpus_per_trial: 0.5, gpus_per_trial: 0.25, max_retries: 3}
search:
  space:
    fixed: [true, false]
"""


def test_trials_pack_on_gpus_spread_over_nodes_and_survive_losing_one(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node trains nothing
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        (tmp_path / "s.yaml").write_text(PACKED)
        sweep = subprocess.Popen(
            FIXRAY + ["sweep", "s.yaml", "--address", cluster.address],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        worker_ids = {w.node_id for w in workers}
        deadline = time.monotonic() + 300
        while True:  # until trials train on both worker nodes, a few epochs in
            seen = {r["node_ids"] for r in tune_results(tmp_path, "nodes") if r.get("training_iteration", 0) >= 2}
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
    assert len(parents) == 1 and len(children) == 4
    for child in children:
        assert child.data.tags[STATUS_TAG] == "finished"
        assert steps(client, child, "train/loss") == list(range(1, 9)), "an epoch lost or logged twice"
        assert child.data.tags[RESOURCES_TAG] == "CPU 0.5, GPU 0.25"  # four trials to one GPU
    nodes = [child.data.tags[NODES_TAG].split(",") for child in children]
    moved = [n for n in nodes if n[0] == lost.node_id]
    assert moved and all(n == [lost.node_id, workers[1].node_id] for n in moved), nodes  # rescheduled
    # Each moved trial resumed from a checkpoint: its first report on the new node is past epoch 1.
    first_after_move = {}
    for report in tune_results(tmp_path, "nodes"):
        if report["node_ids"] == workers[1].node_id:
            first_after_move.setdefault(report["trial_id"], report["epoch"])
    lost_trials = {r["trial_id"] for r in tune_results(tmp_path, "nodes") if r["node_ids"] == lost.node_id}
    assert lost_trials and all(first_after_move[t] > 1 for t in lost_trials), first_after_move
