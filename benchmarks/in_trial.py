"""fixray's training loop against the shortest hand-written PyTorch loop of the same model, data, batch size
and device, and what fixray's per-epoch measurements and checkpoints cost on top. Measured side by side,
repeat by repeat, in one run (this machine is shared and noisy): compare the ratios, not the seconds.

Both loops train on the same CIFAR-shaped uint8 images (random, no download) without augmentation and with
the same device settings (channels-last, bf16 where fixray picks them), so the work per step is the same.
fixray's loop also passes over the test split each epoch (the authors' loop does too: its LR schedule and
best-epoch accuracy read it), measures the geometry from that pass (compactness, separability, Spearman), and
copies its state for a checkpoint; a second bare loop takes the test accuracy each epoch, as the authors' does.

Rerun:  .venv/bin/python benchmarks/in_trial.py            (--device cuda on a GPU machine)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fixray.crossing.contract import Augmentation, Execution, HeadConfig, TrialConfig
from fixray.crossing.images import ImageSet, InputSpec, Splits
from fixray.trial.augment import normalise
from fixray.trial.device import Device
from fixray.trial.loop import train
from fixray.trial.measure import embed, measure
from fixray.trial.models import build_classifier


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


def bare_loop(cfg: TrialConfig, splits: Splits, on: Device, evaluate: bool) -> float:
    """Seconds for cfg.epochs epochs of forward, loss, backward, step (and, with `evaluate`, the test accuracy
    each epoch, as the authors' loop takes it), with fixray's device settings: nothing else."""
    model = build_classifier(cfg.model, splits.input_spec, 10, cfg.head, 0).to(
        on.device, memory_format=on.memory_format
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.from_numpy(splits.train.x).to(on.device), torch.from_numpy(splits.train.y).to(on.device)
    test_x, test_y = torch.from_numpy(splits.test.x).to(on.device), torch.from_numpy(splits.test.y).to(on.device)
    half = torch.full((3,), 0.5, device=on.device)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(on.device)
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i : i + cfg.batch_size]
            with on.autocast():
                loss = F.cross_entropy(model(on.images(normalise(x[batch], half, half)), y[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if evaluate:
            model.eval()
            with torch.inference_mode(), on.autocast():
                step = on.eval_batch()
                correct = sum(
                    (model(on.images(normalise(test_x[i : i + step], half, half))).argmax(1) == test_y[i : i + step])
                    .sum()
                    .item()
                    for i in range(0, len(test_y), step)
                )
            assert 0 <= correct <= len(test_y)
    if on.device.type == "cuda":
        torch.cuda.synchronize(on.device)
    return time.perf_counter() - start


def fixray_loop(cfg: TrialConfig, splits: Splits, on: Device, checkpoint_every: int) -> float:
    execution = dataclasses.replace(on.execution, checkpoint_every=checkpoint_every)
    start = time.perf_counter()
    train(cfg.settled(), splits, lambda metrics, state: None, device=on.device, execution=execution)
    return time.perf_counter() - start


def measurement(cfg: TrialConfig, splits: Splits, on: Device) -> tuple[float, float]:
    """Seconds for one epoch's pass over the test split, and for the geometry measured from it on top."""
    model = build_classifier(cfg.model, splits.input_spec, 10, cfg.head, 0).to(
        on.device, memory_format=on.memory_format
    )
    x, y = torch.from_numpy(splits.test.x).to(on.device), torch.from_numpy(splits.test.y).to(on.device)
    half = torch.full((3,), 0.5, device=on.device)
    start = time.perf_counter()
    features, logits = embed(model, x, half, half, on)
    passed = time.perf_counter()
    measure(features, logits, y, model.head.class_vectors)
    return passed - start, time.perf_counter() - passed


def checkpoint_cost(model_name: str, device: torch.device, repeats: int) -> tuple[float, float]:
    """(MB, seconds) of one checkpoint as the loop takes it: the model and SGD state copied, then saved to disk."""
    model = build_classifier(model_name, InputSpec(3, 32), 10, HeadConfig(kind="dot", fixed=True), 0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 3, 32, 32, device=device)).sum().backward()
    optimizer.step()  # the momentum buffers exist, as after any epoch
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            start = time.perf_counter()
            state = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            torch.save(state, Path(folder) / "state.pt")
            seconds.append(time.perf_counter() - start)
        size = (Path(folder) / "state.pt").stat().st_size / 1e6
    return size, statistics.fmean(seconds)


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
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--checkpoint-model", default="resnet18", help="whose checkpoint is timed (the paper's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    on = Device(args.device, Execution())
    splits, cfg = synthetic(args.train_images, args.test_images), config(args)
    images = args.epochs * args.train_images
    times: dict[str, list[float]] = {
        "bare": [],
        "bare + test accuracy each epoch": [],
        f"fixray, checkpoint every {Execution().checkpoint_every} epochs": [],
        "fixray, checkpoint every epoch": [],
    }
    test_pass, geometry = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in the machine's load hit every variant alike
        variants = list(times.values())
        variants[0].append(bare_loop(cfg, splits, on, evaluate=False))
        variants[1].append(bare_loop(cfg, splits, on, evaluate=True))
        variants[2].append(fixray_loop(cfg, splits, on, Execution().checkpoint_every))
        variants[3].append(fixray_loop(cfg, splits, on, 1))
        seconds = measurement(cfg, splits, on)
        test_pass.append(seconds[0])
        geometry.append(seconds[1])
    bare, evaluated = statistics.fmean(times["bare"]), statistics.fmean(times["bare + test accuracy each epoch"])
    settings = f"channels_last {on.execution.channels_last}, bf16 {on.execution.bf16}"
    print(f"{args.model}, {args.train_images} train / {args.test_images} test images 3x32x32, batch {args.batch}, ")
    print(f"{args.epochs} epochs, {args.threads} thread(s) on {args.device} ({settings}), {args.repeats} repeats")
    figures = {}
    for name, seconds in times.items():
        mean = statistics.fmean(seconds)
        figures[name] = {"images_per_s": images / mean, "vs_bare": bare / mean, "vs_bare_evaluating": evaluated / mean}
        print(
            f"{name:>34}: {images / mean:8.0f} images/s ({images / max(seconds):.0f}-{images / min(seconds):.0f})"
            f"  vs bare {bare / mean:.3f}  vs bare + test accuracy {evaluated / mean:.3f}"
        )
    epoch = bare / args.epochs
    figures["test_pass_share"] = statistics.fmean(test_pass) / epoch
    figures["geometry_share"] = statistics.fmean(geometry) / epoch
    print(
        f"each epoch: the test pass {statistics.fmean(test_pass):.3f} s = {figures['test_pass_share']:.1%} of a bare "
        f"epoch ({epoch:.2f} s); the geometry on top {statistics.fmean(geometry) * 1000:.1f} ms = "
        f"{figures['geometry_share']:.2%}"
    )
    size, seconds = checkpoint_cost(args.checkpoint_model, on.device, args.repeats)
    figures["checkpoint"] = {"model": args.checkpoint_model, "mb": size, "seconds": seconds}
    print(
        f"one checkpoint of {args.checkpoint_model} (model and SGD state, copied and saved): {size:.0f} MB, "
        f"{seconds:.2f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
