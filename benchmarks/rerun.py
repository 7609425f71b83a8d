"""How long `fixray sweep` takes to say that a finished sweep has nothing left to run, beside `fixray report` of the
same sweep and `fixray validate` of its file, measured side by side in one run, repeat by repeat (this machine is
shared and noisy): compare the medians. The rerun reads MLflow and prints the answer without starting Ray.

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
    "sweep (finished)": ["sweep", "rerun.yaml"],
    "report": ["report", "rerun"],
    "validate": ["validate", "rerun.yaml"],
}


def seconds(args: list[str], folder: Path) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    subprocess.run([FIXRAY, *args], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fixray-rerun-"))
    (folder / "rerun.yaml").write_text(SWEEP)
    first = seconds(["sweep", "rerun.yaml"], folder)
    print(f"first run: 16 trials in {first:.1f} s")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command, folder))
    done = subprocess.run([FIXRAY, "sweep", "rerun.yaml"], cwd=folder, capture_output=True, text=True, check=True)
    assert "every one ended earlier (kept): nothing to run" in done.stdout, done.stdout
    for name, found in times.items():
        print(f"{name:18} median {statistics.median(found):5.2f} s  (min {min(found):.2f}, max {max(found):.2f})")
    rerun, report = statistics.median(times["sweep (finished)"]), statistics.median(times["report"])
    print(f"rerun of a finished sweep / report of it: {rerun / report:.2f}")


if __name__ == "__main__":
    main()
