"""CIFAR ResNet18 training throughput on one GPU, for the settings fixray's loop can take, and for several
trials packed on the GPU at once; no download (tensors of CIFAR-10's shape, uint8 on the device, crop and
flip done there in batches, as fixray's loop does). Each setting is measured `--repeats` times, side by
side in one run: compare images/s and the ratios, which survive a noisy machine better than seconds.

Rerun on a GPU machine (under 5 minutes on an H100/H200):
    .venv/bin/python benchmarks/gpu.py                     # writes gpu-benchmark.json beside the table
On the CPU (what the tests run, a few seconds):
    .venv/bin/python benchmarks/gpu.py --device cpu --quick

A full run on a GPU also saves the fastest training FLOP/s it measured (every setting and packing) as this machine's
throughput (~/.cache/fixray/throughput.json, or --throughput-file): `fixray validate` and `fixray sweep` then
give GPU-hours at it instead of an assumed one. A full run on the CPU (--device cpu) saves this machine's CPU rate
(~/.cache/fixray/cpu-throughput.json): `fixray validate` then also says what its sweeps would take on these CPUs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fixray.crossing.contract import Augmentation, Execution, HeadConfig
from fixray.crossing.images import InputSpec
from fixray.sweep.cost import image_flop
from fixray.sweep.defaults import cpu_throughput_file, throughput_file
from fixray.trial.augment import augment, normalise
from fixray.trial.device import Device, share_gpu
from fixray.trial.models import build_classifier

# CIFAR ResNet18 on 32x32: about 0.56 G multiply-adds forward per image, so 1.12 GFLOP forward and, with the
# backward at twice the forward, about 3.36 GFLOP per trained image.
TRAIN_FLOP_PER_IMAGE = {"resnet18": 3 * 2 * 0.56e9}
EPOCH_IMAGES = 50_000  # one CIFAR-10 training epoch
CIFAR = InputSpec(channels=3, size=32)
AUGMENTATION = Augmentation(crop_padding=4, flip=True)  # CIFAR's standard crop and flip


@dataclass(frozen=True)
class Setting:
    """A named way for fixray's loop to run a step: memory layout, autocast dtype, compiled or eager."""

    name: str
    execution: Execution


SETTINGS = [
    Setting("fp32", Execution(channels_last=False, bf16=False)),
    Setting("channels_last", Execution(channels_last=True, bf16=False)),
    Setting("bf16+channels_last", Execution(channels_last=True, bf16=True)),
    Setting("bf16+channels_last+compile", Execution(channels_last=True, bf16=True, compile=True)),
]


@dataclass(frozen=True)
class Plan:
    """What one run measures: the model, batch sizes, packed-trial counts, and how long each measurement is."""

    model: str = "resnet18"
    images: int = 10_000  # uint8 images held on the device (enough that batches are not cache-hot)
    batches: tuple[int, ...] = (32, 128)
    packed: tuple[int, ...] = (1, 2, 4, 8)  # trials on one GPU at once (gpus_per_trial 1, 1/2, 1/4, 1/8)
    packed_batch: tuple[int, ...] = (32, 128)
    warmup_steps: int = 20  # not timed: cuDNN autotuning, compilation, allocator growth
    steps: int = 200  # timed steps per repeat
    settings: tuple[Setting, ...] = tuple(SETTINGS)


QUICK = Plan(
    model="small_cnn",
    images=256,
    batches=(8, 16),
    packed=(1, 2),
    packed_batch=(8,),
    warmup_steps=1,
    steps=2,
    settings=tuple(s for s in SETTINGS if not s.execution.compile),  # compiling on the CPU outlasts the test
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(plan: Plan, setting: Setting, batch: int, device_name: str, repeats: int) -> list[float]:
    """Images/s of `repeats` timed runs of `plan.steps` training steps each, as fixray's loop takes them."""
    on = Device(device_name, setting.execution)
    device = on.device
    torch.manual_seed(0)
    model = build_classifier(plan.model, CIFAR, 10, HeadConfig(kind="dot", fixed=True), seed=0)
    model = model.to(device, memory_format=on.memory_format)
    step_model = on.compiled(model, distributed=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images = torch.randint(0, 256, (plan.images, *((CIFAR.channels, CIFAR.size, CIFAR.size))), dtype=torch.uint8)
    images, labels = images.to(device), torch.randint(0, 10, (plan.images,)).to(device)
    half = torch.full((CIFAR.channels,), 0.5, device=device)  # mean and std 0.5: the authors' normalisation
    generator = torch.Generator().manual_seed(0)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # as fixray's loop: read once, not per step

    def step() -> None:
        picked = torch.randint(0, plan.images, (batch,), generator=generator).to(device)
        x = on.images(normalise(augment(images[picked], AUGMENTATION, generator), half, half))
        with on.autocast():
            logits = step_model(x, labels[picked])
            loss = F.cross_entropy(logits, labels[picked])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums.add_(torch.stack([loss.detach() * batch, (logits.argmax(1) == labels[picked]).sum()]))

    for _ in range(plan.warmup_steps):
        step()
    _sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(plan.steps):
            step()
        _sync(device)
        rates.append(plan.steps * batch / (time.perf_counter() - start))
    sums.tolist()
    return rates


def _packed_worker(args: tuple) -> list[float]:
    plan, setting, batch, device_name, repeats, threads, start_at, share = args
    torch.set_num_threads(threads)
    if device_name.startswith("cuda"):
        if torch.device(device_name).index is not None:  # cuda:N; plain "cuda" is the current device already
            torch.cuda.set_device(torch.device(device_name))
        print(f"    a packed trial: {share_gpu(share)}", flush=True)  # as a sweep's packed trial is bounded
    while time.time() < start_at:  # every trial starts its timed steps together
        time.sleep(0.001)
    return measure(plan, setting, batch, device_name, repeats)


def measure_packed(plan: Plan, setting: Setting, batch: int, trials: int, device: str, repeats: int) -> list[float]:
    """Aggregate images/s of `trials` processes training at once on one device (Tune's packed trials)."""
    threads = max(1, (multiprocessing.cpu_count() // trials) if device == "cpu" else 1)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with context.Pool(trials) as pool:
        start_at = time.time() + 2 + trials  # after each process has imported torch
        work = (plan, setting, batch, device, repeats, threads, start_at, 1 / trials)
        per_trial = pool.map(_packed_worker, [work] * trials)
    return [sum(rates) for rates in zip(*per_trial)]  # aggregate, repeat by repeat


def _summary(rates: list[float], model: str) -> dict[str, float]:
    mean = statistics.fmean(rates)
    row = {"images_per_s_mean": mean, "images_per_s_min": min(rates), "images_per_s_max": max(rates)}
    row["epoch_s"] = EPOCH_IMAGES / mean
    if model in TRAIN_FLOP_PER_IMAGE:
        row["tflop_per_s"] = mean * TRAIN_FLOP_PER_IMAGE[model] / 1e12
    return row


def run(plan: Plan, device: str, repeats: int) -> dict:
    results = {"plan": asdict(plan), "device": device, "repeats": repeats, "settings": [], "packed": []}
    if device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
    for setting in plan.settings:
        for batch in plan.batches:
            rates = measure(plan, setting, batch, device, repeats)
            row = {"setting": setting.name, "batch": batch} | _summary(rates, plan.model)
            results["settings"].append(row)
            print(_line(row), flush=True)
    fastest = max(results["settings"], key=lambda r: r["images_per_s_mean"])  # packed trials run the fastest
    best = next(s for s in plan.settings if s.name == fastest["setting"])
    for batch in plan.packed_batch:
        for trials in plan.packed:
            rates = measure_packed(plan, best, batch, trials, device, repeats)
            row = {"setting": best.name, "batch": batch, "trials": trials} | _summary(rates, plan.model)
            results["packed"].append(row)
            print(_line(row), flush=True)
    return results


def _line(row: dict) -> str:
    packed = f" x{row['trials']} trials" if "trials" in row else ""
    flops = f"  {row['tflop_per_s']:7.1f} TFLOP/s" if "tflop_per_s" in row else ""
    return (
        f"{row['setting']:>28} batch {row['batch']:>4}{packed:<11} {row['images_per_s_mean']:10.0f} images/s "
        f"(min {row['images_per_s_min']:.0f}, max {row['images_per_s_max']:.0f}){flops}  epoch {row['epoch_s']:.2f} s"
    )


def save_throughput(results: dict, plan: Plan, path: Path) -> dict:
    """The fastest measured rate (any setting, any packing) as FLOP/s of one device, counted as the compute plan counts
    a training image: what `fixray validate` reads back."""
    fastest = max(results["settings"] + results["packed"], key=lambda row: row["images_per_s_mean"])
    flop = image_flop(plan.model, CIFAR.channels, CIFAR.size, 10, "global", None)
    packed = f", {fastest['trials']} trials packed" if "trials" in fastest else ""
    where = results.get("gpu", results["device"])
    saved = {
        "flop_per_s": fastest["images_per_s_mean"] * flop,
        "measured": f"{where}, {plan.model} {fastest['setting']} batch {fastest['batch']}{packed}, "
        f"{time.strftime('%Y-%m-%d')}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2) + "\n")
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="a small model and few steps: checks the script runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (mean, min and max)")
    parser.add_argument("--json", default="gpu-benchmark.json", help="where the figures are written")
    parser.add_argument(
        "--throughput-file",
        type=Path,
        help=f"where the fastest FLOP/s is saved for the compute plan (default: {throughput_file()} on a full GPU "
        f"run, {cpu_throughput_file()} on a full CPU run, which `fixray validate` turns into hours on this machine's "
        "CPUs; given, any run saves it)",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu (with --quick) to check the script on the CPU")
    plan = QUICK if args.quick else Plan()
    results = run(plan, args.device, args.repeats)
    with open(args.json, "w") as out:
        json.dump(results, out, indent=2)
    print(f"written: {args.json}")
    default = throughput_file() if args.device.startswith("cuda") else cpu_throughput_file()
    saved_to = args.throughput_file or (default if not args.quick else None)
    if saved_to is not None:
        saved = save_throughput(results, plan, saved_to)
        print(f"this machine's throughput: {saved['flop_per_s'] / 1e12:.3g} TFLOP/s ({saved['measured']}): {saved_to}")


if __name__ == "__main__":
    main()
