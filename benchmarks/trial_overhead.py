"""What Ray costs per trial: the same digits trials bare, as fixray's Tune function trials, and nested in
one-worker TorchTrainers (the alternative fixray avoids for one-worker trials). Measured side by side in
one run, since the machine is shared and noisy; compare the ratios, not the seconds.

Rerun:  make benchmark     (or: .venv/bin/python benchmarks/trial_overhead.py --trials 4 --epochs 5)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from fixray.data import load_dataset
from fixray.plan import points, trial_config
from fixray.spec import parse_sweep
from fixray.sweep import ddp_worker, run_sweep
from fixray.sweep_data import prepare_data
from fixray.train import train


def spec_for(trials: int, epochs: int, folder: Path):
    raw = {
        "name": "bench",
        "dataset": "digits",
        "model": "small_cnn",
        "epochs": epochs,
        "batch_size": 32,
        "seeds": list(range(trials)),
        "search": {"space": {"kind": "cosine", "S": 10, "fixed": True}},
        "storage_path": str(folder / "runs"),
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    return parse_sweep(raw, Path("bench.yaml"))


def bare(spec) -> float:
    torch.set_num_threads(1)
    splits = load_dataset("digits")
    start = time.perf_counter()
    for point in points(spec):
        train(trial_config(spec, point), splits, lambda m, s: None)
    return time.perf_counter() - start


def function_trials(spec) -> float:
    start = time.perf_counter()
    run_sweep(spec, prepare_data(spec))
    return time.perf_counter() - start


def nested_trainers(spec, folder: Path) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    splits_ref = ray.put(load_dataset("digits"))

    def driver(config):
        cfg = trial_config(spec, config["point"])
        TorchTrainer(
            ddp_worker,
            train_loop_config={"cfg": cfg, "splits": splits_ref, "threads": 1, "checkpoint_every": 1},
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(
                name=f"nested-{tune.get_context().get_trial_id()}",
                storage_path=str(folder / "nested"),
                callbacks=[TuneReportCallback()],
            ),
        ).fit()

    tuner = tune.Tuner(
        tune.with_resources(driver, {"cpu": 0, "memory": 2**26}),
        param_space={"point": tune.grid_search(points(spec))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name="nested", storage_path=str(folder / "nested-tune"), verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = spec_for(args.trials, args.epochs, folder)
        ray.init(num_cpus=os.cpu_count(), logging_level="ERROR")
        try:
            seconds = {
                "bare loop, one after another": bare(spec),
                "fixray function trials (reuse_actors, MLflow on)": function_trials(spec),
                "nested 1-worker TorchTrainer per trial": nested_trainers(spec, folder),
            }
        finally:
            ray.shutdown()
    base = seconds["bare loop, one after another"]
    print(f"\n{args.trials} digits trials x {args.epochs} epochs on {os.cpu_count()} CPUs (ratio to the bare loop):")
    for name, value in seconds.items():
        print(f"  {name:<52} {value:7.1f} s   x{value / base:5.1f}")


if __name__ == "__main__":
    main()
