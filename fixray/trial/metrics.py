"""The paper's measurements and neural collapse as pure tensor functions (no training, no tracking)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


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


def class_vector_abs_cos_max(class_vectors: torch.Tensor) -> float:
    """Largest off-diagonal |cos(w_i, w_j)|: how near any two class vectors come to sharing a line."""
    return _off_diagonal(class_cosine_matrix(class_vectors)).abs().max().item()


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
    cosines = _off_diagonal(class_cosine_matrix(class_vectors)).double().cpu()
    counts = _off_diagonal(confusion).double().cpu()
    if cosines.std() == 0 or counts.std() == 0:
        return math.nan
    ranked = torch.stack([_average_ranks(cosines), _average_ranks(counts)])
    return torch.corrcoef(ranked)[0, 1].item()


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing their mean rank: Spearman's rho is Pearson's r of these (as scipy ranks)."""
    _, group, sizes = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last = sizes.cumsum(0).double()  # the rank of each group's last member
    return (last - (sizes.double() - 1) / 2)[group]


# --- neural collapse (Papyan, Han & Donoho 2020; Zhu et al. 2021), on one split's image vectors h ------------------
# Every class weighs the same, however many images it has (the class-balanced convention of the imbalanced neural
# collapse literature, e.g. Thrampoulidis et al. 2022, "Imbalance trouble"): mu_c is the mean of class c's images, the
# global mean mu_G the mean of the class means, Sigma_W the mean over classes of each class's own covariance
# (1/K sum_c 1/n_c sum_i), Sigma_B the mean over classes. On a balanced split this is Papyan et al.'s definition.


@dataclass(frozen=True)
class ClassGeometry:
    """One split's image vectors grouped by class, computed once (float64): what NC1, CDNV, NC2 of the means, NC3
    and NC4 read. Built per epoch on the test split, so the means and the within-class offsets are made once."""

    features: torch.Tensor  # N x d
    present: torch.Tensor  # the classes that have images, ascending
    index: torch.Tensor  # each image's class, as a position in `present`
    means: torch.Tensor  # K x d, one row per present class
    counts: torch.Tensor  # K: images of each present class

    @classmethod
    def of(cls, features: torch.Tensor, labels: torch.Tensor) -> ClassGeometry:
        h = features.double()
        present, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        sums = torch.zeros(len(present), h.shape[1], dtype=torch.float64, device=h.device).index_add_(0, index, h)
        return cls(h, present, index, sums / counts[:, None], counts)

    @cached_property
    def centred(self) -> torch.Tensor:
        """mu_c - mu_G, one row per present class: what NC2 and NC3 compare."""
        return self.means - self.means.mean(0)

    @cached_property
    def within(self) -> torch.Tensor:
        """h - mu_c for every image."""
        return self.features - self.means[self.index]

    def nc1(self) -> float:
        """NC1 = tr(Sigma_W pinv(Sigma_B)) / K: within-class spread against between-class spread; 0 at collapse.

        With B the K x d centred means, Sigma_B = B^T B / K has pinv K B+ B+^T, so NC1 is the mean over classes of
        the mean over their images of ||(h - mu_c) B+||^2: a pseudo-inverse of K x d, not of d x d (4,608-d image
        vectors on STL-10 with the authors' pooling)."""
        projected = self.within @ torch.linalg.pinv(self.centred)
        return ((projected.square().sum(1) / self.counts[self.index]).sum() / len(self.counts)).item()

    def cdnv(self) -> float:
        """Class-distance normalised variance (Galanti et al. 2022), averaged over class pairs:
        (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2), Var_c the mean squared distance of class c's images to mu_c."""
        k = len(self.means)
        sums = torch.zeros(k, dtype=torch.float64, device=self.means.device)
        variances = sums.index_add_(0, self.index, self.within.square().sum(1)) / self.counts
        distances = torch.cdist(self.means, self.means).square()
        pairs = ~torch.eye(k, dtype=torch.bool)
        return ((variances[:, None] + variances[None, :])[pairs] / (2 * distances[pairs])).mean().item()

    def nc3(self, class_vectors: torch.Tensor) -> float:
        """Self-duality: ||W/||W||_F - M/||M||_F||_F^2, W the class vectors and M the centred class means (rows);
        0 when the classifier is the class means up to scale."""
        w = class_vectors.double()[self.present]
        return (
            torch.linalg.norm(w / torch.linalg.norm(w) - self.centred / torch.linalg.norm(self.centred)).square().item()
        )

    def nc4(self, logits: torch.Tensor) -> float:
        """The share of images whose prediction (argmax of the logits) differs from the class of the nearest class
        mean (by Euclidean distance); 0 when the classifier is a nearest-mean classifier."""
        # ||h - mu||^2 = ||h||^2 - 2 h.mu + ||mu||^2; ||h||^2 is the same for every class, so it does not pick one
        nearest = self.present[(self.means.square().sum(1) - 2 * self.features @ self.means.T).argmin(1)]
        return (logits.argmax(1) != nearest).double().mean().item()


def etf_distance(vectors: torch.Tensor) -> float:
    """NC2 in Zhu et al.'s form for K vectors (rows): ||G/||G||_F - (I - 11^T/K)/sqrt(K-1)||_F, G the Gram
    matrix; 0 for a simplex ETF (any scale), up to about 1.4 for vectors far from one."""
    x = vectors.double()
    k = len(x)
    gram = x @ x.T
    target = (torch.eye(k, dtype=torch.float64) - 1.0 / k) / math.sqrt(k - 1)
    return torch.linalg.norm(gram / torch.linalg.norm(gram) - target).item()


def equinorm(vectors: torch.Tensor) -> float:
    """Papyan's equinorm: std / mean of the vectors' norms (population std); 0 when all have one length."""
    norms = vectors.double().norm(dim=1)
    return (norms.std(unbiased=False) / norms.mean()).item()


def equiangularity(vectors: torch.Tensor) -> float:
    """Papyan's equiangularity: the std over pairs c != c' of cos(v_c, v_c') (population std); 0 for an ETF."""
    return _off_diagonal(class_cosine_matrix(vectors)).std(unbiased=False).item()
