"""The paper's classification layer, one class per head kind, registered with the kind's declaration.

What a kind reads and defaults to is declared in head_kinds.py (no torch); its behaviour is its class here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fixray.crossing.head_kinds import COSINE, DOT, DRAW_RULES, HeadKind, Margin, VectorDraw, declare_head_kind

BIAS_INIT = 0.01  # the authors' public code initialises every bias to 0.01
UNIFORM_INT_RANGE = (-100, 100)  # the authors' public code: integers in [-100, 100), then l2-normalised

HEADS: dict[str, type[ClassHead]] = {}


def register_head(kind: HeadKind) -> Callable[[type[ClassHead]], type[ClassHead]]:
    """Adds a head class under its kind's name (the sweep file's head.kind), with the kind's declared rules."""

    def add(cls: type[ClassHead]) -> type[ClassHead]:
        cls.kind = declare_head_kind(kind).name
        HEADS[kind.name] = cls
        return cls

    return add


def draw_class_vectors(num_classes: int, dim: int, seed: int, init: VectorDraw = "normal") -> torch.Tensor:
    """Class vectors with l2-normalised rows, reproducible from `seed` and `init` alone.

    normal: uniform on the hypersphere; uniform_int: as the authors' public code; hadamard: rows of a
    Hadamard matrix (Hoffer et al. 2018), mutually orthogonal when dim is a power of 2; etf: a simplex
    equiangular tight frame, every pairwise cosine -1/(K-1) (Papyan et al. 2020), randomly placed in d >= K-1
    dimensions; orthoplex: +-e_i (Pernici et al.'s d-Orthoplex); cube: distinct vertices of the hypercube of
    ceil(log2 K) dimensions (d-Cube). The last two lie in the first dimensions, the rest of each vector 0.
    """
    if init not in DRAW_RULES:
        raise ValueError(f"class vectors are drawn as one of {', '.join(DRAW_RULES)}, got {init!r}")
    need = DRAW_RULES[init].min_dim(num_classes)
    if dim < need:
        raise ValueError(f"{init} class vectors for {num_classes} classes need {need} dimensions, got {dim}")
    generator = torch.Generator().manual_seed(seed)
    if init == "normal":
        vectors = torch.randn(num_classes, dim, generator=generator)
    elif init == "uniform_int":
        vectors = torch.randint(*UNIFORM_INT_RANGE, (num_classes, dim), generator=generator).float()
    elif init == "hadamard":
        from scipy.linalg import hadamard

        order = 1 << max(dim - 1, num_classes - 1, 1).bit_length()  # the smallest power of 2 that fits both
        vectors = torch.tensor(hadamard(order)[:num_classes, :dim], dtype=torch.float32)
    elif init == "etf":
        vectors = _simplex(num_classes) @ _orthonormal_rows(num_classes - 1, dim, generator)
    elif init == "orthoplex":
        vectors = torch.zeros(num_classes, dim)
        classes = torch.arange(num_classes)
        vectors[classes, classes // 2] = 1.0 - 2.0 * (classes % 2)  # class 2i: +e_i, class 2i+1: -e_i
    elif init == "cube":
        bits = need  # ceil(log2 K)
        codes = (torch.arange(num_classes)[:, None] >> torch.arange(bits)) & 1  # class c: the bits of c
        vectors = torch.zeros(num_classes, dim)
        vectors[:, :bits] = 1.0 - 2.0 * codes
    return F.normalize(vectors.float(), dim=1)


def _simplex(num_classes: int) -> torch.Tensor:
    """K unit vectors in K-1 dimensions with every pairwise cosine -1/(K-1): the centred standard basis,
    sqrt(K/(K-1)) (I - 11^T/K), written in an orthonormal basis of the plane orthogonal to 1."""
    k = num_classes
    centred = (torch.eye(k, dtype=torch.float64) - 1.0 / k) * math.sqrt(k / (k - 1))
    basis = torch.linalg.qr(centred)[0][:, : k - 1]  # spans the columns of `centred`: the plane orthogonal to 1
    return (centred @ basis).float()


def _orthonormal_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded random rows x dim matrix with orthonormal rows (QR of a Gaussian), rows <= dim."""
    gaussian = torch.randn(dim, max(rows, 1), generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian)[0][:, :rows].T.float()


class ClassHead(nn.Module):
    """Maps an image vector f(x) to class logits: scores(h) + b over class vectors W, h = f(x) or, with `dim`, a
    learned linear projection of f(x) to dim values (the vectors the class vectors are compared with).

    Fixed heads keep W and b as frozen buffers (saved, moved by .to(), never given to an optimiser);
    learned heads train both from the same draw. A projection is always learned: it is part of the features.
    """

    kind: ClassVar[str]  # its declaration's name (head_kinds.HEAD_KINDS holds what it reads)

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        seed: int = 0,
        fixed: bool = False,
        bias: bool = True,
        init: VectorDraw = "normal",
        draw_seed: int | None = None,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        self.fixed = fixed
        self.projection = nn.Linear(in_features, dim) if dim is not None else None
        width = in_features if dim is None else dim
        weight = draw_class_vectors(num_classes, width, seed if draw_seed is None else draw_seed, init)
        bias_value = torch.full((num_classes,), BIAS_INIT) if bias else None
        if fixed:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)
        else:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None

    @property
    def class_vectors(self) -> torch.Tensor:
        """The m x d class vectors W (a detached view), for the paper's measurements."""
        return self.weight.detach()

    def scores(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Logits before the bias; labels are given in training only."""
        raise NotImplementedError

    def undecayed_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser must not decay whatever optimizer.weight_decay says."""
        return []

    def trained_scalars(self) -> dict[str, float]:
        """Learned scalars worth watching per epoch, logged as head/<name>."""
        return {}

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """h: the image vectors the class vectors score (f(x), or its projection)."""
        return features if self.projection is None else self.projection(features)

    def classify(self, embedded: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of image vectors h already embedded."""
        logits = self.scores(embedded, labels)
        return logits + self.bias if self.bias is not None else logits

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.embed(features), labels)

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"{d} -> {n}, kind={self.kind}, fixed={self.fixed}, bias={self.bias is not None}"


@register_head(DOT)
class DotProductHead(ClassHead):
    """logits = W f + b (paper Sec. 2)."""

    def scores(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return F.linear(features, self.weight)


@register_head(COSINE)
class CosineHead(ClassHead):
    """logits = S * cos(W_j, f) + b, both sides l2-normalised in the forward pass (paper Sec. 3).

    Margins, in training only (labels given): cosface S * (cos - m) and arcface S * cos(theta + m) on the
    true class, so a sweep can ask whether fixing helps those heads too.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        S: float = 1.0,
        learn_S: bool = False,
        margin: Margin = "none",
        m: float = 0.0,
        **common,
    ) -> None:
        super().__init__(in_features, num_classes, **common)
        if S <= 0:
            raise ValueError(f"cosine scale S must be > 0, got {S}")
        self.margin, self.m = margin, float(m)
        scale = torch.tensor(float(S))
        if learn_S:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def scores(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        cosines = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        if labels is not None and self.margin != "none":
            target = F.one_hot(labels, cosines.shape[1]).bool()
            shifted = cosines - self.m if self.margin == "cosface" else arcface(cosines, self.m)
            cosines = torch.where(target, shifted, cosines)
        return self.scale * cosines

    def undecayed_parameters(self) -> list[nn.Parameter]:
        return [self.scale] if isinstance(self.scale, nn.Parameter) else []  # decay would pull S to 0

    def trained_scalars(self) -> dict[str, float]:
        return {"S": self.scale.item()} if isinstance(self.scale, nn.Parameter) else {}

    def extra_repr(self) -> str:
        margin = f", margin={self.margin}(m={self.m:g})" if self.margin != "none" else ""
        return f"{super().extra_repr()}, S={self.scale.item():g}{margin}"


def arcface(cosines: torch.Tensor, m: float) -> torch.Tensor:
    """cos(theta + m) while theta + m <= pi, else cos(theta) - m sin(m) (Deng et al. 2019, as insightface).

    Past pi, cos(theta + m) would rise again and reward a worse angle; the fallback keeps the target logit
    falling as theta grows.
    """
    sines = torch.sqrt((1.0 - cosines.square()).clamp(min=0.0))
    shifted = cosines * math.cos(m) - sines * math.sin(m)
    return torch.where(cosines > math.cos(math.pi - m), shifted, cosines - m * math.sin(m))


def build_head(kind: str, in_features: int, num_classes: int, seed: int, **options) -> ClassHead:
    """The head of a registered kind; options are those its declaration reads (HeadConfig.options())."""
    if kind not in HEADS:
        raise ValueError(f"head kind must be one of {sorted(HEADS)}, got {kind!r}")
    return HEADS[kind](in_features, num_classes, seed=seed, **options)
