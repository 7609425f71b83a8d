"""Where a sweep is recorded and stored when its file does not say, and where this machine's measured throughput is
kept: the environment's choice, else the defaults here."""

from __future__ import annotations

import os
from pathlib import Path

LOCAL_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow store when neither the file nor $MLFLOW_TRACKING_URI names one
EXPERIMENT = "fixray"  # MLflow experiment holding a sweep's runs when its file's `tracking:` names none
LOCAL_STORAGE = "fixray-runs"  # Tune's folder when neither the file nor $FIXRAY_STORAGE names one
# One GPU's measured training throughput on this machine, written by benchmarks/gpu.py, read by the compute plan
THROUGHPUT_FILE = Path("~/.cache/fixray/throughput.json")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (a cluster's head sets it to its MLflow server), else a SQLite file here."""
    return os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_TRACKING_URI


def default_storage() -> str:
    """$FIXRAY_STORAGE (a cluster sets it to a bucket or to storage every node mounts), else a folder here."""
    return os.environ.get("FIXRAY_STORAGE") or LOCAL_STORAGE


def throughput_file() -> Path:
    """$FIXRAY_THROUGHPUT (a file of another measurement), else this machine's own, written by benchmarks/gpu.py."""
    return Path(os.environ.get("FIXRAY_THROUGHPUT") or THROUGHPUT_FILE).expanduser()
