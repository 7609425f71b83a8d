"""One trial's training loop: plain PyTorch that reports each epoch through a callback.

It knows nothing of Ray or MLflow. Under torch.distributed it trains with DDP, each rank on its own
shard of every epoch's shuffle; the same code runs in a notebook, a Tune trial or a Ray Train worker.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fixray.trial import figures, metrics
from fixray.trial import metric_keys as keys
from fixray.trial.augment import augment, normalise
from fixray.trial.contract import Execution, TrialConfig, require_settled
from fixray.trial.images import Splits
from fixray.trial.long_tail import with_long_tail
from fixray.trial.losses import LOSSES
from fixray.trial.models import Classifier, build_classifier

# Images per forward pass when measuring a test split: large on a GPU; on a CPU, batches past about 128
# spill its caches (measured with small_cnn, one thread: 1024 per pass is 1.4x slower than 128).
EVAL_BATCH = {"cuda": 1024, "cpu": 128}
FINITE_CHECK_STEPS = 50  # steps between looks at the running loss (each is a GPU -> host sync) to stop a diverged trial

# report(metrics, state): state is a checkpoint to keep (model, optimiser, scheduler, epoch; after the
# last epoch also "figures": PNG bytes by file name) or None.
Report = Callable[[dict[str, float], dict[str, Any] | None], None]


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_ranks_finite(finite: bool, device: torch.device) -> bool:
    """Every rank must agree to stop, or the ones that go on wait forever in the gradient all-reduce."""
    if _distributed()[1] == 1:
        return finite
    flag = torch.tensor([0.0 if finite else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() == 0.0


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def _broadcast_buffers(model: nn.Module) -> None:
    """Gives every rank rank 0's BatchNorm statistics, as DDP does before each forward: all ranks evaluate one model."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _max_weight_difference(model: nn.Module, device: torch.device) -> float:
    """Largest |w_rank - w_rank0| over all weights and buffers; 0 means the DDP replicas agree."""
    flat = torch.cat([t.detach().flatten().double() for t in model.state_dict().values() if t.is_floating_point()]).to(
        device
    )
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    gap = (flat - reference).abs().max()
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return gap.item()


AUTHORS_MEAN_STD = 0.5, 0.5  # the authors' Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) on [0, 1] pixels


def _make_optimizer(cfg: TrialConfig, model: Classifier) -> torch.optim.Optimizer:
    """SGD over every trained parameter; those the head exempts (a learned S) are never decayed."""
    exempt = model.head.undecayed_parameters()
    decayed = [p for p in model.parameters() if p.requires_grad and all(p is not e for e in exempt)]
    groups = [{"params": decayed}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    sgd = cfg.optimizer
    nesterov = sgd.nesterov and sgd.momentum > 0  # torch refuses Nesterov without momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=sgd.momentum, nesterov=nesterov, weight_decay=sgd.weight_decay)


def _make_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer):
    schedule = cfg.schedule
    if schedule.kind == "plateau":  # stepped on test accuracy in percent, as the authors' code
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=schedule.factor,
            patience=schedule.patience,
            threshold_mode=schedule.threshold_mode,
        )
    if schedule.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


class Device:
    """Where and how the loop computes: the device, the memory order of images and the autocast it trains under."""

    def __init__(self, device: torch.device | str, execution: Execution) -> None:
        self.device = torch.device(device)
        self.execution = execution.on(self.device.type)
        self.memory_format = torch.channels_last if self.execution.channels_last else torch.contiguous_format

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory order the weights use (a mismatch would convert it inside every convolution)."""
        return images.contiguous(memory_format=self.memory_format) if images.dim() == 4 else images

    def autocast(self):
        """The autocast forward passes run under: bf16 when asked, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.execution.bf16))

    def eval_batch(self) -> int:
        """Images per forward pass over a test split on this device."""
        return EVAL_BATCH.get(self.device.type, EVAL_BATCH["cuda"])

    def compiled(self, net: nn.Module, distributed: bool) -> nn.Module:
        """The training forward, compiled if asked: with CUDA graphs on a GPU, but not under DDP's hooks."""
        if not self.execution.compile:
            return net
        return torch.compile(net, mode="reduce-overhead" if self.device.type == "cuda" and not distributed else None)


def share_gpu(fraction: float) -> str:
    """Bounds this process to `fraction` of the GPU's memory (packed trials: one's allocation past its share
    fails in that trial alone, never in its neighbours); says what the bound is."""
    torch.cuda.set_per_process_memory_fraction(fraction)
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    return f"GPU memory bound {fraction * total:.1f} GiB ({fraction:g} of {total:.1f} GiB)"


@torch.inference_mode()
def _embed(
    model: Classifier, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, on: Device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image vectors h (those the head scores) and logits of a split, in float32 whatever the autocast."""
    model.eval()
    step = on.eval_batch()
    with on.autocast():
        batches = [
            model.embed_and_classify(on.images(normalise(images[i : i + step], mean, std)))
            for i in range(0, len(images), step)
        ]
    features, logits = zip(*batches)
    return torch.cat(features).float(), torch.cat(logits).float()


def measure(
    features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, vectors: torch.Tensor
) -> dict[str, float]:
    """Accuracy, loss, the paper's geometry measurements and neural collapse on the test split (each epoch)."""
    predictions = logits.argmax(dim=1)
    separability_mean, separability_max = metrics.image_separability(features, labels, vectors.shape[0])
    confusion = metrics.confusion_matrix(labels, predictions, vectors.shape[0])
    vector_norms = vectors.double().norm(dim=1)
    return {
        keys.VAL_LOSS: F.cross_entropy(logits, labels).item(),
        keys.VAL_ACC: metrics.accuracy(logits, labels),
        keys.COMPACTNESS: metrics.compactness(features, vectors, predictions),
        keys.SEPARABILITY_MEAN: separability_mean,
        keys.SEPARABILITY_MAX: separability_max,
        keys.CONFUSION_SPEARMAN: metrics.confusion_correlation(vectors, confusion),
        keys.NC2_WEIGHTS: metrics.etf_distance(vectors),
        keys.VECTOR_NORM_MEAN: vector_norms.mean().item(),
        keys.VECTOR_NORM_STD: vector_norms.std(unbiased=False).item(),
    } | neural_collapse(features, logits, labels, vectors, keys.VAL_COLLAPSE)


def neural_collapse(
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    vectors: torch.Tensor,
    named: dict[str, str] = keys.VAL_COLLAPSE,
) -> dict[str, float]:
    """Neural-collapse measurements of one split's image vectors against the class vectors (metrics.py says each),
    under that split's keys (`named`: keys.VAL_COLLAPSE or keys.TRAIN_COLLAPSE)."""
    geometry = metrics.ClassGeometry.of(features, labels)  # the class means and offsets, once for all below
    feature_norms = geometry.features.norm(dim=1)
    found = {
        "nc1": geometry.nc1(),
        "cdnv": geometry.cdnv(),
        "nc2_means": metrics.etf_distance(geometry.centred),
        "equinorm_means": metrics.equinorm(geometry.centred),
        "equiangularity_means": metrics.equiangularity(geometry.centred),
        "nc3": geometry.nc3(vectors),
        "nc4": geometry.nc4(logits),
        "feature_norm_mean": feature_norms.mean().item(),
        "feature_norm_std": feature_norms.std(unbiased=False).item(),
    }
    return {named[name]: value for name, value in found.items()}


def class_vector_geometry(vectors: torch.Tensor) -> dict[str, float]:
    """The class vectors' cosines and distance from a simplex ETF: logged once, of the best epoch's vectors."""
    cos_mean, cos_max = metrics.class_vector_cosines(vectors)
    return {
        keys.VECTOR_COS_MEAN: cos_mean,
        keys.VECTOR_COS_MAX: cos_max,
        keys.VECTOR_ABS_COS_MAX: metrics.class_vector_abs_cos_max(vectors),
        keys.VECTOR_ETF_DISTANCE: metrics.etf_distance(vectors),
    }


def _input_stats(cfg: TrialConfig, splits: Splits, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std that normalise the images: the training set's own, or the authors' 0.5."""
    if cfg.normalisation == "authors":
        channels = splits.input_spec.channels
        return (torch.full((channels,), value, device=device) for value in AUTHORS_MEAN_STD)
    return (torch.tensor(v, device=device) for v in splits.channel_stats)


def _extra_accuracies(model: Classifier, splits: Splits, mean, std, on: Device, last: bool = False) -> dict[str, float]:
    """Accuracy on each extra test set (corrupted, generalisation) as <prefix>/acc; <prefix>/acc_last if `last`."""
    accuracies = {}
    for prefix, extra in splits.extra.items():
        logits = _embed(model, _tensor(extra.x, on.device), mean, std, on)[1]
        accuracies[keys.extra_acc(prefix, last)] = metrics.accuracy(logits, _tensor(extra.y, on.device))
    return accuracies


def draw_figures(
    cfg: TrialConfig,
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    vectors: torch.Tensor,
    names: tuple[str, ...],
) -> dict[str, bytes]:
    """The paper's three figures for this trial, as PNG files by name."""
    head = cfg.head.label()
    confusion = metrics.confusion_matrix(labels, logits.argmax(dim=1), vectors.shape[0])
    return {
        "class_vector_cosines.png": figures.class_cosine_png(vectors, names, f"class-vector cosines ({head})"),
        "mistakes_vs_cosine.png": figures.mistakes_vs_cosine_png(
            vectors, confusion, f"mistakes vs class-vector cosine ({head})"
        ),
        "image_vectors_2d.png": figures.image_vectors_png(features, labels, names, head),
    }


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # arrays from Ray's object store are read-only and shared: never written
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(array).to(device)


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's share of the epoch's shuffle; every rank gets the same number of images."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return order[: n - n % world][rank::world]


def train(
    cfg: TrialConfig,
    splits: Splits,
    report: Report,
    start: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    execution: Execution | None = None,
) -> dict[str, float]:
    """Trains one model for cfg.epochs epochs (from `start`, a state this loop reported); returns the last metrics.

    A state (a checkpoint) is reported every `execution.checkpoint_every` epochs and after the last; the others
    report metrics alone, and the loop does not copy its state for them.
    """
    require_settled(cfg)  # the planner settled it (head-kind defaults resolved); the loop trusts that
    splits = with_long_tail(splits, cfg.long_tail.ratio, cfg.long_tail.seed)
    on = Device(device, execution or Execution())
    device, checkpoint_every = on.device, on.execution.checkpoint_every
    rank, world = _distributed()
    model = build_classifier(cfg.model, splits.input_spec, splits.num_classes, cfg.head, cfg.seed, cfg.pooling)
    model = model.to(device, memory_format=on.memory_format)
    optimizer = _make_optimizer(cfg, model)
    scheduler = _make_scheduler(cfg, optimizer)
    first_epoch = 1
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(start["scheduler"])
        first_epoch = start["epoch"] + 1
    # The best test accuracy so far, its epoch and weights: the authors report best_acc and keep its checkpoint.
    best: dict[str, Any] | None = start.get("best") if start is not None else None
    net = on.compiled(DistributedDataParallel(model) if world > 1 else model, distributed=world > 1)
    train_x, train_y = _tensor(splits.train.x, device), _tensor(splits.train.y, device)
    test_x, test_y = _tensor(splits.test.x, device), _tensor(splits.test.y, device)
    mean, std = _input_stats(cfg, splits, device)
    objective = LOSSES[cfg.loss]

    last: dict[str, float] = {}
    for epoch in range(first_epoch, cfg.epochs + 1):
        net.train()
        # Running sums stay on the device (loss x images, correct images): the host reads them once an epoch,
        # so a GPU never waits for the CPU inside the step loop. A NaN or inf loss makes the sum non-finite.
        sums, seen = torch.zeros(2, dtype=torch.float64, device=device), 0
        order = _epoch_order(len(train_x), cfg.seed, epoch, rank, world).to(device)
        generator = torch.Generator().manual_seed((cfg.seed * 100_003 + epoch) * 1_009 + rank)
        for step, i in enumerate(range(0, len(order), cfg.batch_size), start=1):
            batch = order[i : i + cfg.batch_size]
            labels = train_y[batch]
            images = on.images(normalise(augment(train_x[batch], cfg.augmentation, generator), mean, std))
            with on.autocast():
                embedded, logits = net(images, labels, embedded=True)
                loss = objective(embedded, logits, labels, model.head.class_vectors)  # float32 under autocast
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([loss.detach() * len(batch), (logits.argmax(1) == labels).sum()])
            seen += len(batch)
            if world == 1 and step % FINITE_CHECK_STEPS == 0 and not math.isfinite(sums[0].item()):
                break  # diverged: no use training on (DDP ranks must take the same steps, so they go on)
        loss_sum, correct = sums.tolist()
        lr = optimizer.param_groups[0]["lr"]
        if not _all_ranks_finite(math.isfinite(loss_sum), device):
            # NaN accuracy, the best included: a search ranks a diverged trial as failed, never by its epochs before.
            last = {
                keys.EPOCH: epoch,
                keys.TRAIN_LOSS: math.nan,
                keys.VAL_ACC: math.nan,
                keys.BEST_ACC: math.nan,
                keys.LR: lr,
                keys.DIVERGED: 1.0,
            }
            report(last, None)
            return last
        if world > 1:
            _broadcast_buffers(model)
            loss_sum, correct, seen = _sum_over_ranks([loss_sum, correct, seen], device)
        last = {keys.EPOCH: epoch, keys.TRAIN_LOSS: loss_sum / seen, keys.TRAIN_ACC: correct / seen, keys.LR: lr}
        last[keys.DIVERGED] = 0.0
        features, logits = _embed(model, test_x, mean, std, on)
        last.update(measure(features, logits, test_y, model.head.class_vectors))
        last.update({keys.head_scalar(name): value for name, value in model.head.trained_scalars().items()})
        if cfg.nc_train_every and (epoch % cfg.nc_train_every == 0 or epoch == cfg.epochs):
            train_features, train_logits = _embed(model, train_x, mean, std, on)
            vectors = model.head.class_vectors
            last.update(neural_collapse(train_features, train_logits, train_y, vectors, keys.TRAIN_COLLAPSE))
        # Strictly better: of equal epochs the earlier stays, as in the authors' code.
        if best is None or last[keys.VAL_ACC] > best["acc"]:
            best = {"acc": last[keys.VAL_ACC], "epoch": epoch, "model": copy.deepcopy(model.state_dict())}
        last |= {keys.BEST_ACC: best["acc"], keys.BEST_EPOCH: best["epoch"]}
        if epoch == cfg.epochs:
            # What the paper reports of a run is its best epoch's weights: their class vectors' geometry, robustness
            # and generalisation (and the last epoch's too, for the extra sets), and the figures.
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(best["model"])
            last.update(class_vector_geometry(best_model.head.class_vectors))
            if splits.extra:
                last.update(_extra_accuracies(model, splits, mean, std, on, last=True))
                last.update(_extra_accuracies(best_model, splits, mean, std, on))
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(100 * last[keys.VAL_ACC])
        elif scheduler is not None:
            scheduler.step()
        if world > 1 and epoch == cfg.epochs:
            last[keys.DDP_WEIGHT_DIFF] = _max_weight_difference(model, device)
        state = None
        if rank == 0 and (epoch % checkpoint_every == 0 or epoch == cfg.epochs):
            state = copy.deepcopy(
                {  # a snapshot: state_dict() tensors alias the live, still-training ones
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                }
            )
            state["best"] = best  # already a private copy, never changed in place
            if epoch == cfg.epochs:
                best_features, best_logits = _embed(best_model, test_x, mean, std, on)
                state["figures"] = draw_figures(
                    cfg, best_features, best_logits, test_y, best_model.head.class_vectors, splits.class_names
                )
        report(last, state)
    return last
