"""What fixray adds per trial: the same trials run bare (fixray's own loop in plain processes, two at a time,
one torch thread each) and as `fixray sweep` with two concurrent one-CPU trials, at two trial sizes. Both run
side by side in one run, repeat by repeat (this machine is shared and noisy): compare the ratios.

The sweep's wall time is split by what its own records say: start-up (command start to the start of the first
trial's first epoch in Tune's results), the trials (first epoch to last epoch ended), the end (to the command's exit);
and per trial, its training time in the sweep (Tune's time_total_s, less the trial function's set-up before its loop:
the first result's time beyond the second's) against the same trial bare.

Rerun:  make benchmark      (or: .venv/bin/python benchmarks/trial_overhead.py --repeats 2 --json out.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

from fixray.crossing.contract import Execution
from fixray.data.registry import load_dataset
from fixray.sweep.plan import points, trial_config
from fixray.sweep.spec.checks import parse_sweep
from fixray.trial.loop import train

FIXRAY = os.path.join(os.path.dirname(sys.executable), "fixray")
SIZES = {"short": 3, "long": 200}  # digits epochs per trial: about 1 s and about 30 s of training bare, one thread


def sweep_text(trials: int, epochs: int, checkpoint_every: int = Execution().checkpoint_every) -> str:
    return yaml.safe_dump(
        {
            "name": "bench",
            "dataset": "digits",
            "model": "small_cnn",
            "epochs": epochs,
            "batch_size": 32,
            "seeds": list(range(trials)),
            "search": {"max_concurrent_trials": 2, "space": {"kind": "cosine", "S": 10, "fixed": True}},
            "resources": {"cpus_per_trial": 1, "checkpoint_every": checkpoint_every},
        }
    )


def _bare_trial(args: tuple[str, dict]) -> float:
    """One trial in a plain process: the loop, the data, one thread; seconds of training."""
    text, point = args
    torch.set_num_threads(1)
    spec = parse_sweep(yaml.safe_load(text), Path("bench.yaml"))
    start = time.perf_counter()
    train(
        trial_config(spec, point),
        load_dataset("digits"),
        lambda metrics, state: None,
        execution=spec.resources.execution(),
    )
    return time.perf_counter() - start


def bare(text: str) -> tuple[float, list[float]]:
    """Wall seconds for every trial, two plain processes at a time, and each trial's training seconds."""
    spec = parse_sweep(yaml.safe_load(text), Path("bench.yaml"))
    start = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        trials = list(pool.map(_bare_trial, [(text, point) for point in points(spec)]))
    return time.perf_counter() - start, trials


def sweep(text: str) -> dict[str, float]:
    """`fixray sweep` in a fresh folder: wall seconds, split by Tune's own result records."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench.yaml").write_text(text)
        start = time.time()
        done = subprocess.run([FIXRAY, "sweep", "bench.yaml"], cwd=tmp, capture_output=True, text=True)
        end = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"fixray sweep exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        results = [
            json.loads(line)
            for path in Path(tmp, "fixray-runs", "bench").glob("*/result.json")
            for line in path.read_text().splitlines()
        ]
    # A trial's first epoch starts its second epoch's time before its first result: the first result's own time also
    # holds what the trial function does before its loop (importing torch, fetching the data).
    epoch = {r["trial_id"]: r["time_this_iter_s"] for r in results if r["training_iteration"] == 2}
    first = {r["trial_id"]: r for r in results if r["training_iteration"] == 1}
    first_epoch_starts = min(r["timestamp"] - epoch[trial] for trial, r in first.items())
    last_end = max(r["timestamp"] for r in results)
    last = {}
    for r in results:  # a trial's training time: Tune's time_total_s less its set-up, as the bare trial is timed
        set_up = max(first[r["trial_id"]]["time_this_iter_s"] - epoch[r["trial_id"]], 0.0)
        last[r["trial_id"]] = max(last.get(r["trial_id"], 0.0), r["time_total_s"] - set_up)
    return {
        "wall": end - start,
        "start-up": first_epoch_starts - start,
        "trials": last_end - first_epoch_starts,
        "end": end - last_end,
        "trial_mean": statistics.fmean(last.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--checkpoint-every-epoch", action="store_true", help="also run the long sweep with a checkpoint every epoch"
    )
    args = parser.parse_args(argv)
    figures: dict[str, dict] = {}
    for size in args.sizes:
        text, every_epoch = sweep_text(args.trials, SIZES[size]), sweep_text(args.trials, SIZES[size], 1)
        runs = {"bare": [], "sweep": [], "bare_trial": [], "parts": [], "every_epoch": []}
        for _ in range(args.repeats):  # interleaved, so drifts in the machine's load hit every variant alike
            wall, trials = bare(text)
            runs["bare"].append(wall)
            runs["bare_trial"].append(statistics.fmean(trials))
            parts = sweep(text)
            runs["sweep"].append(parts["wall"])
            runs["parts"].append(parts)
            if size == "long" and args.checkpoint_every_epoch:  # the default interval against every epoch
                runs["every_epoch"].append(sweep(every_epoch)["trial_mean"])
        ratios = [s / b for s, b in zip(runs["sweep"], runs["bare"])]
        trial_bare = statistics.fmean(runs["bare_trial"])
        parts = {k: statistics.fmean(p[k] for p in runs["parts"]) for k in runs["parts"][0]}
        figures[size] = {
            "epochs": SIZES[size],
            "bare_s": runs["bare"],
            "sweep_s": runs["sweep"],
            "ratio_mean": statistics.fmean(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "bare_trial_s": trial_bare,
            "sweep_parts_s": parts,
        }
        print(
            f"{size}: {args.trials} digits trials x {SIZES[size]} epochs, two at a time, one CPU each "
            f"(a trial bare: {trial_bare:.1f} s of training)\n"
            f"  bare {statistics.fmean(runs['bare']):6.1f} s   fixray sweep {statistics.fmean(runs['sweep']):6.1f} s"
            f"   ratio {statistics.fmean(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) over {args.repeats}\n"
            f"  the sweep: start-up {parts['start-up']:.1f} s, trials {parts['trials']:.1f} s, "
            f"end {parts['end']:.1f} s; a trial trains {parts['trial_mean']:.1f} s in the sweep "
            f"({parts['trial_mean'] / trial_bare:.2f}x bare)",
            flush=True,
        )
        if runs["every_epoch"]:
            every = statistics.fmean(runs["every_epoch"])
            figures[size]["trial_checkpoint_every_epoch_s"] = every
            print(
                f"  with a checkpoint every epoch (not every {Execution().checkpoint_every}), a trial trains "
                f"{every:.1f} s in the sweep ({every / trial_bare:.2f}x bare)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
