"""Opening a tracking store: where a local one lives, one driver at a time creating it, a reader that never creates
one, and a server that must answer at the start."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from fixray.errors import BadInput, Unavailable
from fixray.faults import store_unreachable
from fixray.records.location import local_store_path


class MissingStore(BadInput):
    """A read-only command pointed at a tracking URI where no MLflow store exists."""


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


def warm_store(tracking_uri: str) -> None:
    """Imports what a database store's client needs (SQLAlchemy and MLflow's store, about a second), writing nothing:
    run while Ray starts, so opening the store after it costs its queries alone."""
    if urlparse(tracking_uri).scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


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
