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
# This machine's CPUs' measured training throughput (a CPU run of benchmarks/gpu.py): what a sweep would take here
CPU_THROUGHPUT_FILE = Path("~/.cache/fixray/cpu-throughput.json")
# Each architecture's counted training FLOP per image, so a sweep file is priced without importing torch once counted
FLOP_CACHE_FILE = Path("~/.cache/fixray/flop-per-image.json")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (a cluster's head sets it to its MLflow server), else a SQLite file here."""
    return os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_TRACKING_URI


def default_storage() -> str:
    """$FIXRAY_STORAGE (a cluster sets it to a bucket or to storage every node mounts), else a folder here."""
    return os.environ.get("FIXRAY_STORAGE") or LOCAL_STORAGE


def cpu_throughput_file() -> Path:
    """$FIXRAY_CPU_THROUGHPUT, else CPU_THROUGHPUT_FILE."""
    return Path(os.environ.get("FIXRAY_CPU_THROUGHPUT") or CPU_THROUGHPUT_FILE).expanduser()


def flop_cache_file() -> Path:
    """$FIXRAY_FLOP_CACHE, else FLOP_CACHE_FILE."""
    return Path(os.environ.get("FIXRAY_FLOP_CACHE") or FLOP_CACHE_FILE).expanduser()


def throughput_file() -> Path:
    """$FIXRAY_THROUGHPUT (a file of another measurement), else this machine's own, written by benchmarks/gpu.py."""
    return Path(os.environ.get("FIXRAY_THROUGHPUT") or THROUGHPUT_FILE).expanduser()
