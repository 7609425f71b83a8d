"""Two researchers' sweeps on one cluster at once: each sweep's share of the trial slots over time. A real multi-node
Ray cluster on this machine (a head that trains nothing and two worker nodes of 2 CPUs: 4 slots) and one MLflow
server; sweep A is submitted, sweep B a few seconds later, each of 8 digits trials capped at `--cap` at once. Prints,
per window of seconds since A started, how many slots each sweep's trials held (from their MLflow start and end
times), and each sweep's mean share while both had trials left.

Rerun:  .venv/bin/python benchmarks/lab_sharing.py --cap 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import free_port  # noqa: E402
from test_mlflow_outage import _server, _stop  # noqa: E402  (the real MLflow server the tests start)

from fixray.records.runs import SweepRuns  # noqa: E402

FIXRAY = os.path.join(os.path.dirname(sys.executable), "fixray")
SLOTS = 4
SWEEP = """\
name: {name}
dataset: digits
model: small_cnn
epochs: 6
batch_size: 64
seeds: [0, 1]
storage_path: {storage}
tracking: {{uri: "{uri}"}}
search:
  max_concurrent_trials: {cap}
  space:
    kind: [dot, cosine]
    fixed: [true, false]
resources: {{cpus_per_trial: 1}}
"""


def held(children, at_ms: float) -> int:
    return sum(1 for c in children if c.info.start_time <= at_ms < (c.info.end_time or at_ms + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=2, help="search.max_concurrent_trials of each sweep")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per printed window")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fixray-lab-"))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(folder, port)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=SLOTS // 2)
    cluster.wait_for_nodes()
    try:
        drivers = []
        for name in ("A", "B"):
            (folder / name).mkdir()
            (folder / name / "s.yaml").write_text(
                SWEEP.format(name=name, storage=folder / "runs", uri=uri, cap=args.cap)
            )
            command = [FIXRAY, "sweep", "s.yaml", "--address", cluster.address]
            drivers.append(subprocess.Popen(command, cwd=folder / name, stdout=subprocess.DEVNULL))
            time.sleep(3)
        for driver in drivers:
            assert driver.wait(timeout=1800) == 0
        runs = {name: SweepRuns(uri, "fixray", name, create=False).children() for name in ("A", "B")}
    finally:
        cluster.shutdown()
        _stop(server)
    start = min(c.info.start_time for c in runs["A"])
    end = max(c.info.end_time for found in runs.values() for c in found)
    both = min(max(c.info.end_time for c in found) for found in runs.values())  # until one sweep has nothing left
    print(f"{SLOTS} slots, each sweep capped at {args.cap}; slots held (sampled each second), by window:")
    shares = {"A": [], "B": []}
    at = start
    while at < end:
        samples = [at + s * 1000 for s in range(int(args.window))]
        counts = {name: sum(held(found, t) for t in samples) / len(samples) for name, found in runs.items()}
        since = (at - start) / 1000
        print(f"  {since:5.0f}-{since + args.window:.0f} s   A {counts['A']:.1f}   B {counts['B']:.1f}")
        if at + args.window * 1000 <= both:
            for name in shares:
                shares[name].append(counts[name])
        at += args.window * 1000
    total = sum(sum(v) for v in shares.values()) or 1
    a_share, b_share = sum(shares["A"]) / total, sum(shares["B"]) / total
    print(f"while both had trials left: A held {a_share:.0%} of the slots in use, B {b_share:.0%}")


if __name__ == "__main__":
    main()
