"""The MLflow server stopped mid-sweep, for longer than the client's own retries, then started again: the
sweep trains on, keeps its writes, replays them in order, and every child run holds every epoch once."""

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from e2e import ENV, FIXRAY, epochs_logged
from mlflow.tracking import MlflowClient

from fixray.records.runs import ROLE_TAG, STATUS_TAG

pytestmark = pytest.mark.slow
MLFLOW = Path(sys.executable).with_name("mlflow")
OUTAGE_S = 12  # the driver's MLflow client gives up after ~3 s (2 retries); MLflow's default would be minutes

SWEEP = """\
name: outage
dataset: digits
model: small_cnn
epochs: 20
batch_size: 64
seeds: [0]
search:
  max_concurrent_trials: 1
  space:
    fixed: [true, false]
"""


def _server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}"]
        + ["--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers stop with it
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                return server
        except OSError:
            pass
        assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
        time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    subprocess.run(["pkill", "-KILL", "-g", str(server.pid)], check=False)  # uvicorn workers of its group


def test_a_sweep_outlives_its_mlflow_server_going_away_and_loses_no_epoch(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    (tmp_path / "s.yaml").write_text(SWEEP)
    env = {**ENV, "MLFLOW_TRACKING_URI": uri}
    sweep = subprocess.Popen(
        FIXRAY + ["sweep", "s.yaml"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while epochs_logged(uri) < 3:
            assert sweep.poll() is None and time.monotonic() < deadline, "no epoch reached MLflow"
            time.sleep(0.5)
        _stop(server)
        time.sleep(OUTAGE_S)
        assert sweep.poll() is None, "the sweep stopped while MLflow was away"
        server = _server(tmp_path, port)
        output = sweep.communicate(timeout=300)[0]
    finally:
        sweep.kill()
        _stop(server)
    assert sweep.returncode == 0, output
    assert "MLflow is unreachable" in output and "every pending write is in the store" in output
    client = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")  # the server's own store, read directly
    experiment = client.get_experiment_by_name("fixray")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.data.tags[STATUS_TAG] == "finished"
        for key in ("train/loss", "val/acc"):
            history = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert history == list(range(1, 21)), f"{key}: an epoch lost or logged twice"
    assert not (tmp_path / "fixray-runs" / "outage" / "mlflow-pending.jsonl").exists()
