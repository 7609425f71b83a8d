"""What one sweep driver holds while it runs, checked before Ray or MLflow start: the sweep locked against
a second driver, the storage and the tracking store it was first run with, and SIGTERM turned into a
resumable stop.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path

from fixray.data import DataError
from fixray.pending import unreachable
from fixray.spec import SweepSpec
from fixray.storage import Storage
from fixray.tracking import local_store_path

LOCK_FILE = ".fixray-driver.lock"  # in the driver's folder: held (flock) by the driver running the sweep
TRACKING_FILE = "fixray-tracking.json"  # in the sweep's storage: the MLflow store and experiment it writes to


class SweepBusy(DataError):
    """Another driver is running this sweep; nothing was started."""


def storage(spec: SweepSpec) -> Storage:
    """The sweep's storage root; its folder `spec.name` holds Tune's state, trials, checkpoints and the record."""
    return Storage(spec.storage_path)


def driver_dir(spec: SweepSpec) -> Path:
    """The driver's local folder for this sweep: its lock and its spool of pending MLflow writes."""
    return storage(spec).driver_dir(spec.name)


class DriverLock:
    """An exclusive lock on the sweep's folder for as long as this driver runs it (released if it dies)."""

    def __init__(self, spec: SweepSpec) -> None:
        self.path = driver_dir(spec) / LOCK_FILE
        self.name = spec.name
        self._file = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SweepBusy(
                f"sweep {self.name!r} is already running ({holder}; lock {self.path}). Wait for it to end or stop "
                f"it (Ctrl-C, or SIGTERM to that process), then run the same command to resume; or pass --fresh "
                f"to start a new sweep beside it."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


def check_tracking(spec: SweepSpec) -> None:
    """A sweep resumes in the store it started in: another tracking URI or experiment is refused, not split.

    Also the first look at the storage: a bucket that is missing or out of reach stops the sweep here.
    """
    where = storage(spec)
    record = where.shown(spec.name, TRACKING_FILE)
    wanted = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment}
    try:
        where.check()
        if not where.exists(spec.name, TRACKING_FILE):
            return
        text = where.read_text(spec.name, TRACKING_FILE)
    except OSError as error:
        raise DataError(f"storage_path {where.shown()}: not readable ({error})") from None
    try:
        first = json.loads(text)
    except ValueError as error:
        raise DataError(f"{record}: unreadable ({error}); it records where sweep {spec.name!r} is tracked") from None
    if first != wanted:
        raise DataError(
            f"sweep {spec.name!r} was started with MLflow {first.get('uri')!r} (experiment "
            f"{first.get('experiment')!r}); this run asks for {wanted['uri']!r} (experiment "
            f"{wanted['experiment']!r}). Its runs live in the first store, so it resumes only there: pass "
            f"--tracking-uri {first.get('uri')} (and that experiment), or --fresh to start a new sweep in the new one."
        )


def record_tracking(spec: SweepSpec) -> None:
    where = storage(spec)
    if not where.exists(spec.name, TRACKING_FILE):
        wanted = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment}
        where.write_text(json.dumps(wanted) + "\n", spec.name, TRACKING_FILE)


def check_reachable(tracking_uri: str) -> None:
    """A tracking server must answer when a sweep starts (later outages are waited out, see pending.py)."""
    if local_store_path(tracking_uri) is not None:
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        if not unreachable(error):
            raise
        raise DataError(
            f"the MLflow server at {tracking_uri} does not answer ({type(error).__name__}); start it (on a cluster: "
            f"the head's `mlflow server`, see README) or pass --tracking-uri with one that runs"
        ) from None


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `ray job stop`) stops the sweep as Ctrl-C does: at a checkpoint, resumable."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
