"""The paper's measurements as pure tensor functions (no training, no tracking)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]: the paper's headline number (Tables 1-3, 7-9)."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


def compactness(features: torch.Tensor, class_vectors: torch.Tensor, predictions: torch.Tensor) -> float:
    """Intra-class compactness (paper Table 4): mean cos(f(x), w_pred(x)) over images.

    The class vector is that of the *predicted* class, as in the paper; 1 means every image vector
    lies on its class vector's direction.
    """
    assigned = class_vectors[predictions]
    return F.cosine_similarity(features, assigned, dim=1).mean().item()


def class_cosine_matrix(class_vectors: torch.Tensor) -> torch.Tensor:
    """The m x m matrix of cos(w_i, w_j) (paper Fig. 2 and 4, left and middle)."""
    unit = F.normalize(class_vectors.double(), dim=1)
    cosines = unit @ unit.T
    return (cosines + cosines.T) / 2  # exactly symmetric: cos(w_i, w_j) and cos(w_j, w_i) are one value


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    mask = ~torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix[mask]


def class_vector_cosines(class_vectors: torch.Tensor) -> tuple[float, float]:
    """(mean, max) off-diagonal cos(w_i, w_j): how spread the class vectors are (for fixed ones, the draw itself)."""
    off = _off_diagonal(class_cosine_matrix(class_vectors))
    return off.mean().item(), off.max().item()


def image_separability(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """Inter-class separability of image representations (paper Sec. 1): (mean, max) off-diagonal cosine
    between the class-mean image vectors of the true classes; lower is more separated. Classes without an
    image are left out; NaN with fewer than two classes."""
    counts = torch.bincount(labels.long(), minlength=num_classes)
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels.long(), features.double())
    present = counts > 0
    if int(present.sum()) < 2:
        return math.nan, math.nan
    off = _off_diagonal(class_cosine_matrix(sums[present] / counts[present, None]))
    return off.mean().item(), off.max().item()


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C[i, j] = number of images of class i predicted as class j."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_correlation(class_vectors: torch.Tensor, confusion: torch.Tensor) -> float:
    """Spearman correlation over ordered pairs i != j of cos(w_i, w_j) and C[i, j] (paper Sec. 2-3).

    NaN when either side is constant, e.g. a model that makes no mistakes.
    """
    cosines = _off_diagonal(class_cosine_matrix(class_vectors)).double().cpu().numpy()
    counts = _off_diagonal(confusion).double().cpu().numpy()
    if cosines.std() == 0 or counts.std() == 0:
        return math.nan
    return float(spearmanr(cosines, counts).statistic)
