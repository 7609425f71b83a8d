"""Training objectives by name (the trial's `loss`): each maps a batch's image vectors h, logits, labels and the class
vectors to one scalar loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
import torch.nn.functional as F

from fixray.crossing.contract import Loss

# (h, logits, labels, class vectors) -> loss; h are the vectors the head scores (after its projection, if any).
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, Objective] = {}
NORM_FLOOR = 1e-8  # ||h|| below this is taken as this, so a zero image vector does not divide by zero


def register_loss(name: str) -> Callable[[Objective], Objective]:
    """Adds an objective under a name the contract's Loss admits."""
    if name not in get_args(Loss):
        raise ValueError(f"add {name!r} to contract.Loss first, so sweep files may name it")

    def add(objective: Objective) -> Objective:
        LOSSES[name] = objective
        return objective

    return add


@register_loss("cross_entropy")
def cross_entropy(embedded, logits, labels, class_vectors):
    """The paper's loss: softmax cross-entropy of the logits (bias and S included)."""
    return F.cross_entropy(logits.float(), labels)


@register_loss("dot_regression")
def dot_regression(embedded, logits, labels, class_vectors):
    """Yang et al. 2022's dot-regression loss for a fixed ETF: mean over images of
    1/2 (w_y . h - ||w_y|| ||h||)^2 / ||h|| on unit image vectors h, the norms held constant (no gradient), as their
    code does. Zero exactly when h points along its class vector; it never pushes h away from other classes' vectors,
    which are fixed apart already."""
    unit = F.normalize(embedded.float(), dim=1)
    target = class_vectors[labels].float()
    with torch.no_grad():
        h_norm = unit.norm(dim=1).clamp(min=NORM_FLOOR)
        w_norm = target.norm(dim=1)
    dot = (unit * target).sum(dim=1)
    return (0.5 * (dot - w_norm * h_norm).square() / h_norm).mean()
