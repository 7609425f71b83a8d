"""A lab shares one cluster: two researchers' sweeps submitted to it at once (real multi-node Ray: a head that trains
nothing and two worker nodes; one real MLflow server). Both make progress from the start, each within its own cap of
trials at once, each under its own parent run in the same server; `fixray status` lists both; stopping one leaves
the other untouched and the stopped one resumes."""

import signal
import subprocess
import time

import pytest
from conftest import free_port
from e2e import ENV, FIXRAY, run
from ray.cluster_utils import Cluster
from test_mlflow_outage import _server, _stop

from fixray.records.runs import STATUS_TAG, SweepRuns

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

CAP = 2  # trials at once per sweep (search.max_concurrent_trials); the cluster holds 4
SWEEP = """\
name: {name}
dataset: digits
model: small_cnn
epochs: 4
batch_size: 64
seeds: [0]
storage_path: {storage}
tracking: {{uri: "{uri}"}}
search:
  max_concurrent_trials: {cap}
  space:
    kind: [dot, cosine]
    fixed: [true, false]
resources: {{cpus_per_trial: 1}}
"""


def _most_at_once(children) -> int:
    """The most trial runs of one sweep open at the same instant (from their MLflow start and end times)."""
    edges = sorted([(c.info.start_time, 1) for c in children] + [(c.info.end_time, -1) for c in children])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_two_sweeps_share_one_cluster_each_within_its_cap_and_one_stops_without_touching_the_other(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the drivers' node trains nothing
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        for name in ("alice", "bob"):
            (tmp_path / name).mkdir()
            text = SWEEP.format(name=name, storage=tmp_path / "runs", uri=uri, cap=CAP)
            (tmp_path / name / "s.yaml").write_text(text)
        command = FIXRAY + ["sweep", "s.yaml", "--address", cluster.address]
        alice = subprocess.Popen(command, cwd=tmp_path / "alice", env=ENV, stdout=subprocess.PIPE, text=True)
        bob = subprocess.Popen(command, cwd=tmp_path / "bob", env=ENV, stdout=subprocess.PIPE, text=True)
        for line in bob.stdout:  # bob's first trial trains while alice's sweep has trials queued
            if "] started" in line:
                break
        status = run(["status", "--tracking-uri", uri], tmp_path)
        assert status.returncode == 0 and "alice" in status.stdout and "bob" in status.stdout, status.stdout
        bob.send_signal(signal.SIGTERM)  # `ray job stop` sends SIGTERM
        assert bob.wait(timeout=120) == 130
        bob.stdout.close()
        alice_out, _ = alice.communicate(timeout=600)
        assert alice.returncode == 0, alice_out

        alice_runs = SweepRuns(uri, "fixray", "alice", create=False)
        finished = alice_runs.children()
        assert len(finished) == 4 and all(c.data.tags[STATUS_TAG] == "finished" for c in finished)
        assert _most_at_once(finished) <= CAP
        bob_runs = SweepRuns(uri, "fixray", "bob", create=False)
        assert alice_runs.parent_id != bob_runs.parent_id
        first_of_bob = min(c.info.start_time for c in bob_runs.children())
        assert first_of_bob < max(c.info.end_time for c in finished)  # bob did not wait for alice's whole queue

        resumed = run(["sweep", "s.yaml", "--address", cluster.address], tmp_path / "bob", timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        bob_children = bob_runs.children()
        assert len(bob_children) == 4 and all(c.data.tags[STATUS_TAG] == "finished" for c in bob_children)
        for child in bob_children:
            history = bob_runs.client.get_metric_history(child.info.run_id, "val/acc")
            assert sorted(m.step for m in history) == [1, 2, 3, 4]  # each epoch once, resumed or not
        assert [c.info.end_time for c in alice_runs.children()] == [c.info.end_time for c in finished]  # untouched
    finally:
        cluster.shutdown()
        _stop(server)
        time.sleep(0.5)
