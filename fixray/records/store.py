"""Opening a tracking store: where a local one lives, one driver at a time creating it, a reader that never creates
one, and a server or database that must answer at the start."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from fixray.errors import BadInput, Unavailable
from fixray.faults import store_unreachable
from fixray.records.location import local_store_path

if TYPE_CHECKING:  # imported where a client is made: a sweep's checks run without MLflow's second of imports
    from mlflow.tracking import MlflowClient


class MissingStore(BadInput):
    """A read-only command pointed at a tracking URI where no MLflow store exists."""


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # URI schemes (before any +driver) MLflow's SQL store opens
STORE_LOCK_KEY = 0x666978726179  # the PostgreSQL advisory lock drivers take while one sets up the store ("fixray")
# Set by scripts/cluster-node on a cluster's head (every job's driver inherits it): the kind of store behind the
# head's MLflow server, `sqlite` when it lives on the head's own disk.
SERVER_STORE_VARIABLE = "FIXRAY_MLFLOW_STORE_KIND"
CONNECT_TIMEOUT_S = 10  # seconds a database server may take to accept a connection before it counts as away


def _database(tracking_uri: str) -> str | None:
    """The database a tracking URI names a server of (postgresql, mysql, mssql); None for files and HTTP."""
    scheme = urlparse(tracking_uri).scheme.split("+")[0]
    return scheme if scheme in DATABASES and scheme != "sqlite" else None


def _engine(tracking_uri: str):
    """A connection-per-use engine that gives up after CONNECT_TIMEOUT_S (MLflow's own retries last most of an hour
    against a server that is down)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if _database(tracking_uri) in ("postgresql", "mysql") else {}
    return sqlalchemy.create_engine(tracking_uri, poolclass=NullPool, connect_args=timeout)


@contextmanager
def _connection(tracking_uri: str) -> Iterator:
    """A connection to the database server of a tracking URI; Unavailable where the server does not answer."""
    import sqlalchemy

    engine = _engine(tracking_uri)
    try:
        try:
            connection = engine.connect()
        except sqlalchemy.exc.OperationalError as error:
            raise Unavailable(
                f"the database server of {_hidden(tracking_uri)} does not answer "
                f"({str(error.orig).splitlines()[0]}); start it, or pass --tracking-uri with one that runs"
            ) from None
        with connection:
            yield connection
    finally:
        engine.dispose()


def _has_mlflow_tables(tracking_uri: str) -> bool:
    """Whether the database holds an MLflow store (Unavailable where its server does not answer)."""
    import sqlalchemy

    with _connection(tracking_uri) as connection:
        return sqlalchemy.inspect(connection).has_table("alembic_version")


def _hidden(tracking_uri: str) -> str:
    """The URI without its password, as printed."""
    parsed = urlparse(tracking_uri)
    return (
        parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()
        if parsed.password
        else tracking_uri
    )


@contextmanager
def creating(tracking_uri: str) -> Iterator[None]:
    """One driver at a time sets up a store: two creating one database at once race in MLflow's schema migration,
    and two creating one experiment race in its name check. A file lock beside a local store; a PostgreSQL advisory
    lock on a database server (released with its connection, so a driver that dies holds nothing)."""
    path = local_store_path(tracking_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield
    elif _database(tracking_uri) == "postgresql":
        import sqlalchemy

        with _connection(tracking_uri) as connection:
            connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({STORE_LOCK_KEY})"))
            yield
    else:
        yield


def reading_client(tracking_uri: str) -> MlflowClient:
    """A client for commands that only read: a store that does not exist is an error, never created, and one a driver
    is creating is waited for (opening a database before its tables exist migrates it too)."""
    path = local_store_path(tracking_uri)
    if path is not None and not path.exists():
        raise _missing(tracking_uri, f"{path.resolve()} does not exist")
    with creating(tracking_uri):
        if _database(tracking_uri) and not _has_mlflow_tables(tracking_uri):
            raise _missing(tracking_uri, "the database holds no MLflow tables")
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri)  # opens the store now, under the lock


def _missing(tracking_uri: str, why: str) -> MissingStore:
    return MissingStore(
        f"no MLflow store at {_hidden(tracking_uri)} ({why}): run a sweep first, or pass --tracking-uri with the store "
        f"the sweep wrote to"
    )


def warm_store(tracking_uri: str) -> None:
    """Imports what a database store's client needs (SQLAlchemy and MLflow's store, about a second), writing nothing:
    run while Ray starts, so opening the store after it costs its queries alone."""
    if urlparse(tracking_uri).scheme.split("+")[0] in DATABASES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def require_reachable(tracking_uri: str) -> None:
    """A tracking server or database must answer when a sweep starts (later outages are waited out, see outage.py)."""
    if local_store_path(tracking_uri) is not None:
        return
    if _database(tracking_uri):
        _has_mlflow_tables(tracking_uri)  # Unavailable where its server is down
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        if not store_unreachable(error):
            raise
        raise Unavailable(
            f"the MLflow server at {tracking_uri} does not answer ({type(error).__name__}); start it (on a cluster: "
            f"the head's `mlflow server`, see docs/cluster.md) or pass --tracking-uri with one that runs"
        ) from None


def store_on_the_head(tracking_uri: str) -> str:
    """A warning when the sweep writes to its cluster head's MLflow server and that server keeps its store on the head's
    own disk (lost with the head machine); '' otherwise."""
    if os.environ.get(SERVER_STORE_VARIABLE) != "sqlite" or tracking_uri != os.environ.get("MLFLOW_TRACKING_URI"):
        return ""
    return (
        "WARNING: this cluster's MLflow store is SQLite on the head's own disk: if the head machine dies, every result "
        "of every sweep goes with it. Put it on a database server apart from the head (FIXRAY_MLFLOW_DB, "
        "docs/cluster.md)."
    )
