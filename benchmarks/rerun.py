"""How long the quick commands take: `fixray sweep` of a finished sweep (it reads MLflow and prints the answer without
starting Ray), `fixray report` of it (as tables and as JSON: the first reads the store, the next print that report
again while nothing writes to it) and `fixray validate` of its file, beside two floors they cannot go under: Python
starting, and MLflow's own client opening the sweep's SQLite store and reading its runs. Measured side by side in one
run, repeat by repeat (this machine is shared and noisy): compare the medians.

Rerun:  .venv/bin/python benchmarks/rerun.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXRAY = os.path.join(os.path.dirname(sys.executable), "fixray")
SWEEP = """\
name: rerun
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0, 1]
search:
  space:
    kind: [dot, cosine]
    fixed: [true, false]
    lr: [0.1, 0.01]
"""
COMMANDS = {
    "sweep (finished)": [FIXRAY, "sweep", "rerun.yaml"],
    "report": [FIXRAY, "report", "rerun"],
    "report --format json": [FIXRAY, "report", "rerun", "--format", "json"],
    "validate": [FIXRAY, "validate", "rerun.yaml"],
    "floor: python": [sys.executable, "-c", "pass"],
    "floor: MLflow reads": [
        sys.executable,
        "-c",
        "from mlflow.tracking import MlflowClient; c = MlflowClient('sqlite:///mlflow.db'); "
        "c.search_runs([c.get_experiment_by_name('fixray').experiment_id])",
    ],
}


def seconds(command: list[str], folder: Path) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fixray-rerun-"))
    (folder / "rerun.yaml").write_text(SWEEP)
    first = seconds([FIXRAY, "sweep", "rerun.yaml"], folder)
    print(f"first run: 16 trials in {first:.1f} s")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command, folder))
    done = subprocess.run([FIXRAY, "sweep", "rerun.yaml"], cwd=folder, capture_output=True, text=True, check=True)
    assert "16 ended earlier (kept)" in done.stdout and "Ray" not in done.stdout, done.stdout
    for name, found in times.items():
        print(f"{name:22} median {statistics.median(found):5.2f} s  (min {min(found):.2f}, max {max(found):.2f})")
    median = {name: statistics.median(found) for name, found in times.items()}
    # The first report after the sweep reads the store (its max); the next ones print it again (the median).
    print(f"first report / MLflow's own read of the store: {max(times['report']) / median['floor: MLflow reads']:.2f}")
    print(f"report of an unchanged store / MLflow's own read: {median['report'] / median['floor: MLflow reads']:.2f}")


if __name__ == "__main__":
    main()
