"""Where the fixed cost of a sweep goes: `fixray sweep` of 2 digits trials x 2 epochs, every output line timestamped
from the moment the command started, and the moments the sweep's own records give: a trial trains from its first epoch's
start (its first result's arrival in Tune's result.json, less the second epoch's time: the first result's own time also
holds what the trial function does before its loop, such as importing torch) to its last epoch's end (result.json
written for the last time). Prints the timeline by phase, median over the repeats, and the two targets: the first
trial trains within 6 s of the command, and the command ends within 2 s of the last trial's end. Also the CPU-seconds
the machine spent before the first trial trained (every process: the driver, Ray's, the trials'; /proc/stat, so on a
quiet Linux machine), which bounds how early that can be on its cores.

Rerun:  .venv/bin/python benchmarks/timeline.py [--repeats 3]     (about 30 s a repeat on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FIXRAY = os.path.join(os.path.dirname(sys.executable), "fixray")
SWEEP = """\
name: tail
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
search:
  space:
    fixed: [true, false]
"""
FIRST_TRAINS_S = 6.0  # target: the first trial trains within this many seconds of the command
ENDS_AFTER_S = 2.0  # target: the command ends within this many seconds of the last trial's end
POLL_S = 0.02  # how often result files are looked for
CPU_BEFORE = "CPU-seconds the machine spent before the first trial trained"  # not a moment: printed apart


def _busy_cpu_s() -> float:
    """CPU-seconds the machine has been busy since it booted, all cores and processes together."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")  # not idle, I/O wait or stolen


def _watch(folder: Path, found: dict[Path, float], busy: list[tuple[float, float]], done: threading.Event) -> None:
    """The moment each trial's result.json first holds a result (it is written as the result arrives), and the
    machine's busy CPU-seconds over time."""
    while not done.is_set():
        busy.append((time.monotonic(), _busy_cpu_s()))
        for result in folder.glob("fixray-runs/tail/*/result.json"):
            if result not in found and result.stat().st_size > 0:
                found[result] = time.monotonic()
        time.sleep(POLL_S)


def _busy_at(busy: list[tuple[float, float]], moment: float) -> float:
    """Busy CPU-seconds at a monotonic moment, from the nearest sample before it."""
    return max((b for t, b in busy if t <= moment), default=busy[0][1])


def one_run() -> dict[str, float]:
    """The moments of one sweep, in seconds from the command's start."""
    folder = Path(tempfile.mkdtemp(prefix="fixray-timeline-"))
    (folder / "s.yaml").write_text(SWEEP)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first_results: dict[Path, float] = {}
    busy: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.monotonic()
    busy_at_start = _busy_cpu_s()
    watcher = threading.Thread(target=_watch, args=(folder, first_results, busy, done))
    watcher.start()
    sweep = subprocess.Popen(
        [FIXRAY, "sweep", "s.yaml"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [(time.monotonic() - start, line) for line in sweep.stdout]
    sweep.wait()
    ended = time.monotonic() - start
    done.set()
    watcher.join()
    if sweep.returncode != 0:
        raise SystemExit("".join(line for _, line in lines))

    def at(prefix: str, last: bool = False) -> float:
        moments = [t for t, line in lines if prefix in line]
        return moments[-1] if last else moments[0]

    trains_from, trains_to = [], []
    for result, seen in first_results.items():
        results = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        trains_from.append(seen - start - results[1]["time_this_iter_s"])  # an epoch's time, without the set-up
        trains_to.append(result.stat().st_mtime - (time.time() - time.monotonic()) - start)
    return {
        "first line printed (imports, checks, data, plan)": at("Sweep 'tail'"),
        "MLflow store and Ray started, Tune's first trial started": at(" started "),
        "the first trial trains": min(trains_from),
        "the last trial's end": max(trains_to),
        "the report printed (its last line: where it is in MLflow)": at("MLflow: experiment", last=True),
        "the command ended": ended,
        CPU_BEFORE: _busy_at(busy, start + min(trains_from)) - busy_at_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.repeats)]
    print(f"a sweep of 2 digits trials x 2 epochs, median of {args.repeats} (min-max), seconds from the command:")
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    for name in [name for name in runs[0] if name != CPU_BEFORE]:
        low, high = min(run[name] for run in runs), max(run[name] for run in runs)
        print(f"  {median[name]:5.1f} s ({low:4.1f}-{high:4.1f})  {name}")
    first = median["the first trial trains"]
    tail = median["the command ended"] - median["the last trial's end"]
    met = {True: "met", False: "not met"}
    print(f"the first trial trains at {first:.1f} s (target {FIRST_TRAINS_S:g} s: {met[first <= FIRST_TRAINS_S]})")
    tail_met = met[tail <= ENDS_AFTER_S]
    print(f"the command ends {tail:.1f} s after the last trial (target {ENDS_AFTER_S:g} s: {tail_met})")
    cores = os.cpu_count() or 1
    cpu = median[CPU_BEFORE]
    print(f"{CPU_BEFORE}: {cpu:.1f} (on {cores} cores: {cpu / cores:.1f} s at the least, were every core kept busy)")


if __name__ == "__main__":
    main()
