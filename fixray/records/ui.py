"""The MLflow UI on a sweep: the pages its links open, and the view its trials' page shows.

MLflow 3.17's runs page takes from its URL only the search (searchFilter, orderByKey, ...) and a `viewStateShareKey`;
the columns shown, how many runs the charts draw and the rest of the view live in the browser's storage, except a
shared view: the runs page loads the view state stored as the experiment tag `mlflow.sharedViewState.<key>` (plain
JSON is accepted) and shows it to a browser that has never opened MLflow. fixray writes one per sweep: its trials,
sorted by name, with the settings it searched, best-epoch test accuracy, compactness and the outcome as its columns.
The compare-runs page draws the searched settings against the metrics as parallel coordinates.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote as url_quote
from urllib.parse import urlparse

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from fixray.crossing import metric_keys as keys
from fixray.errors import Unavailable
from fixray.records.runs import STATUS_TAG, SweepRuns

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's experiment tag prefix for a shared runs-page view
VIEW_METRICS = (keys.BEST_ACC, keys.COMPACTNESS)  # beside the searched settings: what a researcher compares trials by


def view_key(parent_id: str) -> str:
    """The sweep's shared view, named by its parent run."""
    return f"fixray-{parent_id}"


def share_trials_view(runs: SweepRuns, settings: list[str]) -> None:
    """Stores the view of the sweep's trials on its experiment: the settings given (the searched ones), then the
    accuracy, compactness and outcome, in that order (MLflow's own columns, and the assistant's panel a fresh browser
    opens, leave room for about seven at 1600 pixels)."""
    columns = [f"params.`{name}`" for name in settings]
    columns += [f"metrics.`{metric}`" for metric in VIEW_METRICS] + [f"tags.`{STATUS_TAG}`"]
    state = {
        "searchFilter": f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{runs.parent_id}'",
        # Sorted by something other than start time, or the UI folds the filtered children under their parent.
        "orderByKey": f"tags.`{MLFLOW_RUN_NAME}`",
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,
        "runsHiddenMode": "SHOW_ALL",  # the charts draw every trial, not the first 10
    }
    runs.client.set_experiment_tag(runs.experiment_id, SHARED_VIEW_TAG + view_key(runs.parent_id), json.dumps(state))


@dataclass(frozen=True)
class Addresses:
    """A sweep's pages in the MLflow UI."""

    trials: str  # its trials, one row each, the settings and accuracies as columns
    compare: str  # MLflow's compare-runs page over its trials: parallel coordinates, every param and metric
    answer: str  # its parent run: the answer, the tables and figures


def ui_base(tracking_uri: str, port: int | None = None) -> str:
    """Where the UI of a store is served: the tracking server itself, or `mlflow ui` on a local store."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{port}" if port else LOCAL_UI


def ui_addresses(base: str, runs: SweepRuns) -> Addresses:
    """The sweep's pages under `base` (ui_base). A sweep whose shared view is not stored yet (published by an older
    fixray) gets the same search in the URL, without the columns."""
    experiment = f"{base}/#/experiments/{runs.experiment_id}"
    key = view_key(runs.parent_id)
    stored = SHARED_VIEW_TAG + key in runs.client.get_experiment(runs.experiment_id).tags
    if stored:
        trials = f"{experiment}/runs?viewStateShareKey={key}"
    else:
        search = url_quote(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{runs.parent_id}'")
        trials = f"{experiment}/runs?searchFilter={search}&orderByKey={url_quote(f'tags.`{MLFLOW_RUN_NAME}`')}"
        trials += "&orderByAsc=true"
    ids = json.dumps([child.info.run_id for child in runs.children()], separators=(",", ":"))
    compare = f"{base}/#/compare-runs?runs={url_quote(ids)}&experiments={url_quote(json.dumps([runs.experiment_id]))}"
    return Addresses(trials, compare, f"{experiment}/runs/{runs.parent_id}")


SERVER_START_S = 90.0  # seconds `mlflow server` may take to answer /health before fixray ui gives up


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_ui(tracking_uri: str, port: int | None = None) -> Iterator[str]:
    """This environment's `mlflow server` on a local store, on 127.0.0.1 (a free port unless given), while the block
    runs; yields its address. Unavailable if it does not answer in SERVER_START_S."""
    port = port or _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")  # beside this interpreter: no activated venv needed
    command = [str(mlflow), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # its own lines, read only if it fails to start (a pipe would fill and stall it)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                said = log.read()[-2000:] if server.poll() is not None else "no answer"
                raise Unavailable(f"mlflow server on port {port} did not start: {said.strip()}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
