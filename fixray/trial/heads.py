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

from fixray.trial.head_kinds import COSINE, DOT, HeadKind, Margin, VectorDraw, declare_head_kind

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
    Hadamard matrix (Hoffer et al. 2018), mutually orthogonal when num_classes <= dim and dim is a power of 2.
    """
    generator = torch.Generator().manual_seed(seed)
    if init == "normal":
        vectors = torch.randn(num_classes, dim, generator=generator)
    elif init == "uniform_int":
        vectors = torch.randint(*UNIFORM_INT_RANGE, (num_classes, dim), generator=generator).float()
    elif init == "hadamard":
        from scipy.linalg import hadamard

        order = 1 << max(dim - 1, num_classes - 1, 1).bit_length()  # the smallest power of 2 that fits both
        vectors = torch.tensor(hadamard(order)[:num_classes, :dim], dtype=torch.float32)
    else:
        raise ValueError(f"class vectors are drawn 'normal', 'uniform_int' or 'hadamard', got {init!r}")
    return F.normalize(vectors, dim=1)


class ClassHead(nn.Module):
    """Maps an image vector f(x) to class logits: scores(f) + b over class vectors W.

    Fixed heads keep W and b as frozen buffers (saved, moved by .to(), never given to an optimiser);
    learned heads train both from the same draw.
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
    ) -> None:
        super().__init__()
        self.fixed = fixed
        weight = draw_class_vectors(num_classes, in_features, seed, init)
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

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.scores(features, labels)
        return logits + self.bias if self.bias is not None else logits

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
