"""One trial's training loop: plain PyTorch that reports each epoch through a callback.

It knows nothing of Ray or MLflow. Under torch.distributed it trains with DDP, each rank on its own
shard of every epoch's shuffle; the same code runs in a notebook, a Tune trial or a Ray Train worker.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import Execution, TrialConfig, require_settled, to_params
from fixray.crossing.images import Splits
from fixray.trial.augment import augment, normalise
from fixray.trial.device import Device
from fixray.trial.long_tail import with_long_tail
from fixray.trial.losses import LOSSES
from fixray.trial.measure import class_vector_geometry, draw_figures, embed, extra_accuracies, measure, neural_collapse
from fixray.trial.models import Classifier, build_classifier
from fixray.trial.ranks import (
    all_ranks_finite,
    broadcast_buffers,
    distributed,
    max_weight_difference,
    sum_over_ranks,
)

FINITE_CHECK_STEPS = 50  # steps between looks at the running loss (each is a GPU -> host sync) to stop a diverged trial

# report(metrics, state): state is a checkpoint to keep (the settled config as flat params, model, optimiser,
# scheduler, epoch, the best epoch so far; after the last epoch also "figures": PNG bytes by file name) or None.
Report = Callable[[dict[str, float], dict[str, Any] | None], None]


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


def _input_stats(cfg: TrialConfig, splits: Splits, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std that normalise the images: the training set's own, or the authors' 0.5."""
    if cfg.normalisation == "authors":
        channels = splits.input_spec.channels
        return (torch.full((channels,), value, device=device) for value in AUTHORS_MEAN_STD)
    return (torch.tensor(v, device=device) for v in splits.channel_stats)


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
    rank, world = distributed()
    model = build_classifier(
        cfg.model, splits.input_spec, splits.num_classes, cfg.head, cfg.seed, cfg.pooling, cfg.standardise_features
    )
    model = model.to(device, memory_format=on.memory_format)
    optimizer = _make_optimizer(cfg, model)
    scheduler = _make_scheduler(cfg, optimizer)
    first_epoch = 1
    if start is not None:
        _require_own(start, cfg)
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(start["scheduler"])
        first_epoch = start["epoch"] + 1
    # The best test accuracy so far, its epoch and weights: the authors report best_acc and keep its checkpoint.
    best: dict[str, Any] | None = start.get("best") if start is not None else None
    net = on.compiled(DistributedDataParallel(model) if world > 1 else model, distributed=world > 1)
    train_x, train_y = on.tensor(splits.train.x), on.tensor(splits.train.y)
    test_x, test_y = on.tensor(splits.test.x), on.tensor(splits.test.y)
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
        if not all_ranks_finite(math.isfinite(loss_sum), device):
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
            broadcast_buffers(model)
            loss_sum, correct, seen = sum_over_ranks([loss_sum, correct, seen], device)
        last = {keys.EPOCH: epoch, keys.TRAIN_LOSS: loss_sum / seen, keys.TRAIN_ACC: correct / seen, keys.LR: lr}
        last[keys.DIVERGED] = 0.0
        features, logits = embed(model, test_x, mean, std, on)
        last.update(measure(features, logits, test_y, model.head.class_vectors))
        last.update({keys.head_scalar(name): value for name, value in model.head.trained_scalars().items()})
        if cfg.nc_train_every and (epoch % cfg.nc_train_every == 0 or epoch == cfg.epochs):
            train_features, train_logits = embed(model, train_x, mean, std, on)
            vectors = model.head.class_vectors
            last.update(neural_collapse(train_features, train_logits, train_y, vectors, keys.TRAIN_COLLAPSE))
        # Strictly better: of equal epochs the earlier stays, as in the authors' code.
        if best is None or last[keys.VAL_ACC] > best["acc"]:
            best = {"acc": last[keys.VAL_ACC], "epoch": epoch, "model": copy.deepcopy(model.state_dict())}
        last |= {keys.BEST_ACC: best["acc"], keys.BEST_EPOCH: best["epoch"]}
        figures = None
        if epoch == cfg.epochs:
            # What the paper reports of a run is its best epoch's weights: their class vectors' geometry, robustness
            # and generalisation (and the last epoch's too, for the extra sets), and the figures (drawn by rank 0).
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(best["model"])
            last.update(class_vector_geometry(best_model.head.class_vectors))
            if splits.extra:
                last.update(extra_accuracies(model, splits, mean, std, on, last=True))
                last.update(extra_accuracies(best_model, splits, mean, std, on))
            if world > 1:
                last[keys.DDP_WEIGHT_DIFF] = max_weight_difference(model, device)
            if rank == 0:
                best_features, best_logits = embed(best_model, test_x, mean, std, on)
                vectors = best_model.head.class_vectors
                figures = draw_figures(cfg, best_features, best_logits, test_y, vectors, splits.class_names)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(100 * last[keys.VAL_ACC])
        elif scheduler is not None:
            scheduler.step()
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
            state |= {"config": to_params(cfg), "best": best}  # best: already a private copy, never changed in place
            if figures is not None:
                state["figures"] = figures
        report(last, state)
    return last


def _require_own(start: dict[str, Any], cfg: TrialConfig) -> None:
    """A checkpoint says which trial it is (its settled config): resuming another trial's is refused."""
    saved = start.get("config")
    if saved is not None and saved != to_params(cfg):
        differ = sorted(k for k in saved.keys() | to_params(cfg).keys() if saved.get(k) != to_params(cfg).get(k))
        raise ValueError(f"a checkpoint of another trial (its {', '.join(differ)} differ): not resumed")
