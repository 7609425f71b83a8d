"""What one sweep driver holds while it runs, checked before Ray or MLflow start: the sweep's folder locked
against a second driver, the tracking store it was first run with, and SIGTERM turned into a resumable stop.
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
from fixray.tracking import local_store_path

LOCK_FILE = ".fixray-driver.lock"  # in the sweep's folder: held (flock) by the driver running it
TRACKING_FILE = "fixray-tracking.json"  # in the sweep's folder: the MLflow store and experiment it writes to


class SweepBusy(DataError):
    """Another driver is running this sweep; nothing was started."""


def experiment_dir(spec: SweepSpec) -> Path:
    """The sweep's folder under storage_path: Tune's state, trials and checkpoints, and fixray's two files."""
    return (spec.storage_path / spec.name).resolve()


class DriverLock:
    """An exclusive lock on the sweep's folder for as long as this driver runs it (released if it dies)."""

    def __init__(self, spec: SweepSpec) -> None:
        self.path = experiment_dir(spec) / LOCK_FILE
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
    """A sweep resumes in the store it started in: another tracking URI or experiment is refused, not split."""
    record = experiment_dir(spec) / TRACKING_FILE
    wanted = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment}
    if not record.exists():
        return
    try:
        first = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{record}: unreadable ({error}); it records where sweep {spec.name!r} is tracked") from None
    if first != wanted:
        raise DataError(
            f"sweep {spec.name!r} was started with MLflow {first.get('uri')!r} (experiment "
            f"{first.get('experiment')!r}); this run asks for {wanted['uri']!r} (experiment "
            f"{wanted['experiment']!r}). Its runs live in the first store, so it resumes only there: pass "
            f"--tracking-uri {first.get('uri')} (and that experiment), or --fresh to start a new sweep in the new one."
        )


def record_tracking(spec: SweepSpec) -> None:
    record = experiment_dir(spec) / TRACKING_FILE
    if not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"uri": spec.tracking.uri, "experiment": spec.tracking.experiment}) + "\n")


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
