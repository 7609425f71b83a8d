"""fixray's training loop against the shortest hand-written PyTorch loop of the same model, data, batch size
and device, and what fixray's per-epoch measurements and checkpoints cost on top. Measured side by side,
repeat by repeat, in one run (this machine is shared and noisy): compare the ratios, not the seconds.

Both loops train on the same CIFAR-shaped uint8 images (random, no download) without augmentation, so the
work per step is the same; fixray's loop also measures the test split each epoch (accuracy, compactness,
separability, Spearman) and deep-copies its state for a checkpoint.

Rerun:  .venv/bin/python benchmarks/in_trial.py            (--device cuda on a GPU machine)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from fixray.augment import normalise
from fixray.data import ImageSet, Splits
from fixray.models import build_classifier
from fixray.train import _embed, measure, train
from fixray.trial import Augmentation, HeadConfig, TrialConfig


def synthetic(train_images: int, test_images: int) -> Splits:
    """CIFAR-10's shapes: 3 x 32 x 32 uint8 images, 10 classes."""
    rng = np.random.default_rng(0)

    def images(n: int) -> ImageSet:
        return ImageSet(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))

    return Splits(images(train_images), images(test_images), tuple(str(i) for i in range(10)))


def config(args) -> TrialConfig:
    return TrialConfig(
        model=args.model,
        epochs=args.epochs,
        seed=0,
        batch_size=args.batch,
        lr=0.01,
        head=HeadConfig(kind="dot", fixed=True),
        augmentation=Augmentation(crop_padding=0, flip=False),
        normalisation="authors",
    )


def bare_loop(cfg: TrialConfig, splits: Splits, device: torch.device) -> float:
    """Seconds for cfg.epochs epochs of forward, loss, backward, step: nothing else."""
    model = build_classifier(cfg.model, splits.input_spec, 10, cfg.head, 0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.from_numpy(splits.train.x).to(device), torch.from_numpy(splits.train.y).to(device)
    half = torch.full((3,), 0.5, device=device)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i : i + cfg.batch_size]
            loss = F.cross_entropy(model(normalise(x[batch], half, half), y[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def fixray_loop(cfg: TrialConfig, splits: Splits, device: torch.device, checkpoint_every: int) -> float:
    start = time.perf_counter()
    train(cfg, splits, lambda metrics, state: None, device=device, checkpoint_every=checkpoint_every)
    return time.perf_counter() - start


def measurement(cfg: TrialConfig, splits: Splits, device: torch.device) -> float:
    """Seconds for one epoch's measurements of the test split, as fixray's loop takes them."""
    model = build_classifier(cfg.model, splits.input_spec, 10, cfg.head, 0).to(device)
    x, y = torch.from_numpy(splits.test.x).to(device), torch.from_numpy(splits.test.y).to(device)
    half = torch.full((3,), 0.5, device=device)
    start = time.perf_counter()
    features, logits = _embed(model, x, half, half)
    measure(features, logits, y, model.head.class_vectors)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--test-images", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="the paper's batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a one-CPU trial has one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, splits, cfg = torch.device(args.device), synthetic(args.train_images, args.test_images), config(args)
    images = args.epochs * args.train_images
    times: dict[str, list[float]] = {"bare": [], "fixray, checkpoint every epoch": [], "fixray, checkpoint at end": []}
    measuring = []
    for _ in range(args.repeats):  # interleaved, so drifts in the machine's load hit every variant alike
        times["bare"].append(bare_loop(cfg, splits, device))
        times["fixray, checkpoint every epoch"].append(fixray_loop(cfg, splits, device, 1))
        times["fixray, checkpoint at end"].append(fixray_loop(cfg, splits, device, args.epochs))
        measuring.append(measurement(cfg, splits, device))
    bare = statistics.fmean(times["bare"])
    print(f"{args.model}, {args.train_images} train / {args.test_images} test images 3x32x32, batch {args.batch}, ")
    print(f"{args.epochs} epochs, {args.threads} thread(s) on {args.device}, {args.repeats} repeats (mean, min-max)")
    for name, seconds in times.items():
        mean = statistics.fmean(seconds)
        print(
            f"{name:>32}: {images / mean:8.0f} images/s ({images / max(seconds):.0f}-{images / min(seconds):.0f})"
            f"  speed vs bare {bare / mean:.3f}"
        )
    epoch = bare / args.epochs
    print(
        f"per-epoch measurements: {statistics.fmean(measuring):.3f} s = {statistics.fmean(measuring) / epoch:.1%} "
        f"of a bare epoch ({epoch:.2f} s)"
    )


if __name__ == "__main__":
    main()
