"""The MLflow store stopped mid-sweep, for longer than the client's own retries, then started again: the sweep trains
on, keeps its writes, replays them in order, and every child run holds every epoch once. The store is an MLflow
server, or a PostgreSQL server the driver writes to directly (tests/postgres.py); `fixray status` reads it after."""

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


class MlflowServer:
    """An MLflow server over SQLite, stopped and started again on its port."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.store = f"sqlite:///{folder / 'server.db'}"  # the server's own store, read directly at the end
        self.start()

    def start(self) -> None:
        self.server = _server(self.folder, self.port)

    def stop(self) -> None:
        _stop(self.server)


class PostgresStore:
    """A PostgreSQL database the driver writes to directly, its whole server stopped and started again."""

    def __init__(self, server) -> None:
        self.server = server
        self.uri = self.store = server.create_database("mlflow")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.mark.parametrize("kind", ["mlflow-server", "postgresql"])
def test_a_sweep_outlives_its_mlflow_store_going_away_and_loses_no_epoch(kind, tmp_path, request):
    store = MlflowServer(tmp_path) if kind == "mlflow-server" else PostgresStore(request.getfixturevalue("postgresql"))
    uri = store.uri
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
        store.stop()
        time.sleep(OUTAGE_S)
        assert sweep.poll() is None, "the sweep stopped while MLflow was away"
        store.start()
        output = sweep.communicate(timeout=300)[0]
        status = subprocess.run(FIXRAY + ["status", "--tracking-uri", uri], capture_output=True, text=True, env=env)
    finally:
        sweep.kill()
        if kind == "mlflow-server":
            store.stop()
    assert sweep.returncode == 0, output
    assert "MLflow is unreachable" in output and "every pending write is in the store" in output
    assert status.returncode == 0 and "outage" in status.stdout, status.stdout + status.stderr
    client = MlflowClient(store.store)
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
