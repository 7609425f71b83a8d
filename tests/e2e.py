"""What the end-to-end tests share: the `fixray` command of this environment, run in a folder, and what a sweep left
in its MLflow store and in Tune's storage."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fixray.records.runs import ROLE_TAG
from fixray.records.store import MissingStore, reading_client
from fixray.storage import Storage, is_uri

FIXRAY = [os.path.join(os.path.dirname(sys.executable), "fixray")]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(FIXRAY + args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def store(cwd: Path, uri: str | None = None):
    """(client, parent run, child runs) of the one sweep in cwd's default SQLite store, or in the store at `uri`."""
    client = reading_client(uri or f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fixray")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    return client, parents, children


def tune_results(cwd: Path, sweep: str, storage_path: str = "fixray-runs") -> list[dict]:
    """Every result Tune wrote for a sweep's trials so far (result.json lines), while it runs or after."""
    where = Storage(storage_path if is_uri(storage_path) else str(cwd / storage_path))
    results = []
    for trial in where.listing(sweep):
        if where.exists(sweep, trial.base_name, "result.json"):
            lines = where.read_text(sweep, trial.base_name, "result.json").splitlines()
            results += [json.loads(line) for line in lines if line.endswith("}")]  # not a line being written
    return results


def epochs_logged(uri: str) -> int:
    """Epochs the sweep's trials have in the MLflow store at `uri` so far (none before a driver creates it)."""
    try:
        client = reading_client(uri)  # waits while a driver creates the store, never creates it
    except MissingStore:
        return 0
    experiment = client.get_experiment_by_name("fixray")
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    return sum(len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs)


def steps(client, run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
