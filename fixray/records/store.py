"""Opening a tracking store: where a local one lives, one driver at a time creating it, a reader that never creates
one, a server that must answer at the start, and the MLflow UI's pages of a sweep."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote as url_quote
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from fixray.errors import BadInput, Unavailable
from fixray.faults import store_unreachable


class MissingStore(BadInput):
    """A read-only command pointed at a tracking URI where no MLflow store exists."""


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder a local store lives in (sqlite:///x.db, file:./mlruns, ./mlruns); None for servers."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else tracking_uri)
    return None


@contextmanager
def creating(tracking_uri: str) -> Iterator[None]:
    """One driver at a time sets up a local store: two creating one SQLite file at once race in MLflow's schema
    migration, and two creating one experiment race in its name check."""
    path = local_store_path(tracking_uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def reading_client(tracking_uri: str) -> MlflowClient:
    """A client for commands that only read: a local store that does not exist is an error, never created, and
    one a driver is creating is waited for (opening a SQLite file before its tables exist migrates it too)."""
    path = local_store_path(tracking_uri)
    if path is not None and not path.exists():
        raise MissingStore(
            f"no MLflow store at {tracking_uri} ({path.resolve()} does not exist): run a sweep first, or pass "
            f"--tracking-uri with the store the sweep wrote to"
        )
    with creating(tracking_uri):
        return MlflowClient(tracking_uri)  # opens the store now, under the lock


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def ui_addresses(tracking_uri: str, experiment_id: str, parent_id: str) -> tuple[str, str]:
    """The MLflow UI pages of a sweep: its trials (the parent's children, one row each) and its parent run (the
    answer, the tables and figures). A local store is served by `mlflow ui`.

    The UI folds filtered children under their parent unless the runs are sorted by something else than their
    start time (checked with MLflow 3.17 in Chromium), so the trials' page sorts them by name."""
    base = tracking_uri.rstrip("/") if urlparse(tracking_uri).scheme in ("http", "https") else LOCAL_UI
    trials = url_quote(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")
    by_name = url_quote(f"tags.`{MLFLOW_RUN_NAME}`")
    experiment = f"{base}/#/experiments/{experiment_id}"
    return (
        f"{experiment}/runs?searchFilter={trials}&orderByKey={by_name}&orderByAsc=true",
        f"{experiment}/runs/{parent_id}",
    )


def require_reachable(tracking_uri: str) -> None:
    """A tracking server must answer when a sweep starts (later outages are waited out, see outage.py)."""
    if local_store_path(tracking_uri) is not None:
        return
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        if not store_unreachable(error):
            raise
        raise Unavailable(
            f"the MLflow server at {tracking_uri} does not answer ({type(error).__name__}); start it (on a cluster: "
            f"the head's `mlflow server`, see docs/cluster.md) or pass --tracking-uri with one that runs"
        ) from None
