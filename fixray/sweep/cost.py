"""What a sweep will cost before it runs: training FLOP counted by PyTorch's FLOP counter on the meta device (never
guessed), and GPU-hours at a stated throughput.

One training image costs the FLOP of a forward and a backward pass of its backbone and head at the dataset's image
size (cross-entropy on one image, counted once per architecture); a trial trains that many times its training images
per epoch, times its epochs. Test-set passes and checkpoints are left out: they are a few percent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fixray.crossing.contract import TrialConfig
from fixray.data.registry import DATASETS
from fixray.errors import BadInput
from fixray.sweep.defaults import cpu_throughput_file, flop_cache_file, throughput_file
from fixray.sweep.plan import PlannedTrial, plan, trial_config
from fixray.sweep.spec.schema import SEED, SweepSpec
from fixray.trial.long_tail import kept_per_class

# Without a measured throughput: 5% of an H100 SXM's dense bf16 peak (989 TFLOP/s). A ResNet18 on 32-pixel images at
# batches of 32-128 keeps a GPU far from its peak (about 5 s an epoch of CIFAR-10's 1.7e14 FLOP: 3%); printed as an
# assumption wherever it is used.
H100_BF16_PEAK = 989e12  # FLOP/s
ASSUMED_UTILISATION = 0.05
ASSUMED_THROUGHPUT = ASSUMED_UTILISATION * H100_BF16_PEAK  # FLOP/s
SECONDS_PER_HOUR = 3600


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, *args, output_mask=None, **kwargs) -> int:
    """A convolution's backward: each gradient asked for (of its input, of its weight) costs one forward convolution.
    PyTorch's own formula leaves `groups` out of the weight gradient and counts a depthwise convolution as a dense
    one (measured: 65x too much at 64 channels, which made MobileNetV2 cost 7x its count)."""
    from torch.utils.flop_counter import conv_flop_count

    mask = output_mask if output_mask is not None else args[7]
    transposed = args[4]
    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed) * (int(mask[0]) + int(mask[1]))


@functools.cache
def image_flop(model: str, channels: int, size: int, classes: int, pooling: str, dim: int | None) -> float:
    """FLOP to train on one image (forward and backward): counted once per architecture and kept in a file keyed by
    the code that builds it and torch's version, so pricing a sweep file again imports no torch."""
    cache = flop_cache_file()
    key = json.dumps([model, channels, size, classes, pooling, dim, _architecture_fingerprint()])
    try:
        counted = json.loads(cache.read_text())
        if not isinstance(counted, dict):
            counted = {}
    except (OSError, ValueError):
        counted = {}  # none yet, or unreadable: counted again and rewritten
    if isinstance(counted.get(key), float):
        return counted[key]
    flop = _count_image_flop(model, channels, size, classes, pooling, dim)
    with contextlib.suppress(OSError):  # a read-only home: counted again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(counted | {key: flop}))
        partial.replace(cache)  # whole or not at all, whoever writes last
    return flop


@functools.cache
def _architecture_fingerprint() -> str:
    """What a counted FLOP depends on: the backbones', the heads' and the counting rule's code, and torch's version."""
    from fixray.trial import backbones

    folder = Path(backbones.__file__).parent
    digest = hashlib.sha256(importlib.metadata.version("torch").encode())
    for path in (*(folder / f"{name}.py" for name in ("backbones", "layers", "models", "heads")), Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _count_image_flop(model: str, channels: int, size: int, classes: int, pooling: str, dim: int | None) -> float:
    """FLOP to train on one image (forward and backward), counted on the meta device: no memory, no data."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from fixray.crossing.contract import HeadConfig
    from fixray.crossing.images import InputSpec
    from fixray.trial.models import build_classifier

    with torch.device("meta"):
        head = HeadConfig(dim=dim).settled()  # the head's kind changes its FLOP by a rounding error
        model_ = build_classifier(model, InputSpec(channels, size), classes, head, seed=0, pooling=pooling)
        # Two images, halved below: batch norm in training mode refuses a batch of one 1x1 map (ResNet18 at 8 px).
        images = torch.randn(2, channels, size, size)
        labels = torch.zeros(2, dtype=torch.long)
    backward = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=backward) as counter:
        F.cross_entropy(model_(images), labels).backward()
    return float(counter.get_total_flops()) / 2


def trial_flop(cfg: TrialConfig, dataset: str) -> float:
    """Training FLOP of one trial."""
    entry = DATASETS[dataset]
    images = entry.train_images
    ratio = cfg.long_tail.ratio
    if ratio is not None and ratio < 1:
        images = sum(kept_per_class(images // entry.classes, entry.classes, ratio))
    one = image_flop(cfg.model, entry.channels, entry.image_size, entry.classes, cfg.pooling, cfg.head.dim)
    return one * images * cfg.epochs


def asha_share(epochs: int, grace: int, reduction: float) -> float:
    """The expected share of a trial's epochs ASHA lets it train: all trials reach the grace period, then
    1/reduction of them each next rung (grace x reduction^k epochs), the last rung the full epochs."""
    trained, rung, surviving = 0.0, grace, 1.0
    previous = 0
    while rung < epochs:
        trained += surviving * (rung - previous)
        previous, rung, surviving = rung, rung * reduction, surviving / reduction
    trained += surviving * (epochs - previous)
    return min(1.0, trained / epochs)


@dataclass(frozen=True)
class ComputePlan:
    trials: int  # planned, or the bound of a method that draws as it runs (num_samples x seeds)
    flop: float  # training FLOP, every trial to its last epoch
    expected_flop: float  # with ASHA's early stops, as its reduction factor expects (= flop without ASHA)
    throughput: float  # FLOP/s of one GPU
    measured: str | None  # where and how the throughput was measured; None: assumed
    bound: str | None  # a method that draws as it runs: its name (trials bounded by num_samples x seeds, each at the
    # costliest values searched); None: every trial planned

    @property
    def gpu_hours(self) -> float:
        return self.flop / self.throughput / SECONDS_PER_HOUR

    @property
    def expected_gpu_hours(self) -> float:
        return self.expected_flop / self.throughput / SECONDS_PER_HOUR

    def wall_hours(self, gpus: float, gpus_per_trial: float) -> float | None:
        """Hours of wall time on `gpus` GPUs with trials packed `gpus_per_trial` to a GPU (each packed trial at its
        share of the throughput); None without GPUs to run on."""
        if gpus <= 0 or gpus_per_trial <= 0:
            return None
        return self.expected_gpu_hours / (math.floor(gpus / gpus_per_trial) * gpus_per_trial)

    def text(self) -> str:
        """e.g. '9.5e+17 FLOP of training, 5.4 GPU-hours at 49.5 TFLOP/s (assumed: 5% of an H100's bf16 peak)'."""
        return self.amount_text(rate=f" at {self.rate_text()}")

    def amount_text(self, rate: str = "") -> str:
        """e.g. '9.5e+17 FLOP of training, 5.4 GPU-hours', the rate (when given) after the GPU-hours."""
        found = f"{self.flop:.1e} FLOP of training, {self.gpu_hours:.3g} GPU-hours{rate}"
        if self.expected_flop < self.flop:
            found += f"; ASHA expected {self.expected_flop:.1e} FLOP, {self.expected_gpu_hours:.3g} GPU-hours"
        return found + (f" (a bound: {self.bound} draws its configurations as it runs)" if self.bound else "")

    def rate_text(self) -> str:
        """e.g. '49.5 TFLOP/s (assumed: 5% of an H100's bf16 peak; benchmarks/gpu.py measures it)'."""
        return _rate_text(self.throughput, self.measured)


def _rate_text(flop_per_s: float, measured: str | None) -> str:
    """A throughput and where it comes from: measured here (how), or assumed."""
    return f"{flop_per_s / 1e12:.3g} TFLOP/s " + (
        f"(measured here: {measured})"
        if measured
        else f"(assumed: {ASSUMED_UTILISATION:.0%} of an H100's bf16 peak; benchmarks/gpu.py measures it)"
    )


@dataclass(frozen=True)
class Throughput:
    """One GPU's training FLOP/s, as benchmarks/gpu.py measured it on this machine."""

    flop_per_s: float
    measured: str  # the GPU, the setting, batch and packing, and when


def saved_throughput(path: Path | None = None) -> Throughput | None:
    """The throughput benchmarks/gpu.py saved (path: throughput_file(), or cpu_throughput_file() for this machine's
    CPUs); None when none was; BadInput when the file is not one it wrote (read as JSON: data, never code)."""
    path = path or throughput_file()
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        found = Throughput(float(saved["flop_per_s"]), str(saved["measured"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(
            f"{path}: not a throughput saved by benchmarks/gpu.py ({error}); run it again or remove the file"
        ) from None
    if not math.isfinite(found.flop_per_s) or found.flop_per_s <= 0:
        raise BadInput(f"{path}: got a throughput of {found.flop_per_s} FLOP/s; expected a positive number")
    return found


def costliest_trial(spec: SweepSpec) -> TrialConfig:
    """The trial of the largest training FLOP a sweep can draw: every searched setting at each of its extremes (its
    listed values, or a range's ends), crossed, so a model searched by {choice: [...]} is priced at its largest."""
    extremes = {name: values.extremes for name, values in spec.searched().items()}
    corners = (dict(zip(extremes, corner)) | {SEED: spec.seeds[0]} for corner in itertools.product(*extremes.values()))
    return max((trial_config(spec, corner) for corner in corners), key=lambda cfg: trial_flop(cfg, spec.dataset))


def compute_plan(
    spec: SweepSpec, trials: list[PlannedTrial] | None = None, throughput: Throughput | None = None
) -> ComputePlan:
    """The sweep's training FLOP and GPU-hours at a throughput: the given one, else this machine's saved one, else
    the assumed one. trials: the sweep's plan when the caller has it (else planned here)."""
    method = spec.search.search_method
    if method.plans_ahead:
        trials = plan(spec) if trials is None else trials
        count = len(trials)
        flop = math.fsum(trial_flop(trial.config, spec.dataset) for trial in trials)
    else:
        count = spec.trials_bound()
        flop = count * trial_flop(costliest_trial(spec), spec.dataset)
    asha = spec.search.asha
    share = asha_share(spec.epochs, asha.grace_period, asha.reduction_factor) if asha else 1.0
    rate = throughput or saved_throughput()
    bound = None if method.plans_ahead else method.name
    if rate is None:
        return ComputePlan(count, flop, flop * share, ASSUMED_THROUGHPUT, None, bound)
    return ComputePlan(count, flop, flop * share, rate.flop_per_s, rate.measured, bound)


@dataclass(frozen=True)
class Admission:
    """The trials a sweep launches: all of them, or under a `budget:` whole configurations (every seed) in the plan's
    order while their planned GPU-hours stay within it. A trial is charged its every epoch (ASHA may stop it sooner)."""

    budget: float | None  # GPU-hours; None: no budget
    admitted: frozenset[str] | None  # run names of the trials that launch; None: every trial
    hours: float  # planned GPU-hours of the admitted trials
    not_run: int  # planned trials past the budget

    def text(self) -> str:
        """e.g. 'budget 2 GPU-hours: 12 trials (1.9 GPU-hours planned) run, 12 not run'."""
        if self.budget is None:
            return ""
        if not self.not_run:
            return f"budget {self.budget:g} GPU-hours: every trial fits ({self.hours:.3g} GPU-hours planned)"
        return (
            f"budget {self.budget:g} GPU-hours: {len(self.admitted)} trials ({self.hours:.3g} GPU-hours planned) run, "
            f"{self.not_run} not run (a rerun with a larger budget runs them)"
        )


def admit(spec: SweepSpec, trials: list[PlannedTrial], throughput: float) -> Admission:
    """Which planned trials launch under the sweep's budget (throughput: FLOP/s of one GPU). BadInput when the budget
    admits not even the first configuration."""
    if spec.budget is None:
        return Admission(None, None, math.nan, 0)
    configurations: dict[TrialConfig, list[PlannedTrial]] = {}
    for trial in trials:  # in the plan's order; seeds of one configuration together
        configurations.setdefault(dataclasses.replace(trial.config, seed=0), []).append(trial)
    admitted, hours = [], 0.0
    for group in configurations.values():
        cost = math.fsum(trial_flop(t.config, spec.dataset) for t in group) / throughput / SECONDS_PER_HOUR
        if hours + cost > spec.budget:
            break
        admitted += [t.name for t in group]
        hours += cost
    if not admitted:
        raise BadInput(
            f"budget: got {spec.budget:g} GPU-hours, which admits no trial; expected at least {cost:.3g}, the first "
            "configuration's plan (every seed, every epoch), or no budget to run every trial"
        )
    return Admission(spec.budget, frozenset(admitted), hours, len(trials) - len(admitted))


def on_these_cpus(flop: float) -> str | None:
    """What `flop` of training would take on this machine's CPUs, at the rate a CPU run of benchmarks/gpu.py saved
    here; None when none did."""
    rate = saved_throughput(cpu_throughput_file())
    if rate is None:
        return None
    hours = flop / rate.flop_per_s / SECONDS_PER_HOUR
    return f"{hours:.3g} hours on this machine's CPUs at {_rate_text(rate.flop_per_s, rate.measured)}"
