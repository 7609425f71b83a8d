"""What sharing the data through Ray's object store saves on a 12-trial sweep, against each trial decoding
the dataset itself. The data is CIFAR-10-sized (50,000 + 10,000 images) written in the official pickle
format to a temporary folder. Both ways run in one Ray session, side by side; compare the ratios.

Per trial it measures the seconds to get the arrays and the trial process's unique memory (USS: pages
no other process shares) after touching every pixel.

Rerun:  .venv/bin/python benchmarks/data_sharing.py [--trials 12]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import ray

from fixray.data.registry import load_dataset

MB = 2**20


def write_cifar10_sized(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, 10_000).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)


def _touch(splits) -> int:
    return int(splits.train.x.sum(dtype=np.uint64) + splits.test.x.sum(dtype=np.uint64))


@ray.remote(num_cpus=1)
def decode_in_trial(root: str) -> tuple[float, float]:
    before = psutil.Process().memory_full_info().uss
    start = time.perf_counter()
    splits = load_dataset("cifar10", Path(root), download=False)
    seconds = time.perf_counter() - start
    _touch(splits)
    return seconds, (psutil.Process().memory_full_info().uss - before) / MB


@ray.remote(num_cpus=1)
def shared_in_trial(holder: list) -> tuple[float, float]:
    before = psutil.Process().memory_full_info().uss
    start = time.perf_counter()
    splits = ray.get(holder[0])  # what tune.with_parameters does for each trial
    seconds = time.perf_counter() - start
    _touch(splits)
    return seconds, (psutil.Process().memory_full_info().uss - before) / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10_sized(Path(tmp))
        ray.init(logging_level="ERROR")
        try:
            decoded = ray.get([decode_in_trial.remote(tmp) for _ in range(args.trials)])
            start = time.perf_counter()
            splits = load_dataset("cifar10", Path(tmp), download=False)
            ref = ray.put(splits)
            driver_seconds = time.perf_counter() - start
            size = (splits.train.x.nbytes + splits.test.x.nbytes) / MB
            shared = ray.get([shared_in_trial.remote([ref]) for _ in range(args.trials)])
        finally:
            ray.shutdown()
    for name, rows, extra in (
        ("decoded in every trial", decoded, 0.0),
        ("shared via object store", shared, driver_seconds),
    ):
        seconds = sum(r[0] for r in rows) + extra
        memory = np.mean([r[1] for r in rows])
        print(f"  {name:<26} {seconds:6.2f} s of loading in all   {memory:7.1f} MiB unique memory per trial")
    print(
        f"{args.trials} trials, {size:.0f} MiB of images: sharing loads "
        f"{(sum(r[0] for r in decoded)) / (sum(r[0] for r in shared) + driver_seconds):.1f}x faster in all and keeps "
        f"{np.mean([r[1] for r in decoded]) - np.mean([r[1] for r in shared]):.0f} MiB less per running trial"
    )


if __name__ == "__main__":
    main()
