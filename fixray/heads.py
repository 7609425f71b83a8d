"""The paper's classification layer: dot-product or cosine logits over fixed or learned class vectors."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

HeadKind = Literal["dot", "cosine"]
VectorDraw = Literal["normal", "uniform_int", "hadamard"]
Margin = Literal["none", "cosface", "arcface"]

BIAS_INIT = 0.01  # the authors' public code initialises every bias to 0.01
UNIFORM_INT_RANGE = (-100, 100)  # the authors' public code: integers in [-100, 100), then l2-normalised


def draw_class_vectors(num_classes: int, dim: int, seed: int, draw: VectorDraw = "normal") -> torch.Tensor:
    """Class vectors with l2-normalised rows, reproducible from `seed` and `draw` alone.

    normal: uniform on the hypersphere; uniform_int: as the authors' public code; hadamard: rows of a
    Hadamard matrix (Hoffer et al. 2018), mutually orthogonal when num_classes <= dim and dim is a power of 2.
    """
    generator = torch.Generator().manual_seed(seed)
    if draw == "normal":
        vectors = torch.randn(num_classes, dim, generator=generator)
    elif draw == "uniform_int":
        vectors = torch.randint(*UNIFORM_INT_RANGE, (num_classes, dim), generator=generator).float()
    elif draw == "hadamard":
        from scipy.linalg import hadamard

        order = 1 << max(dim - 1, num_classes - 1, 1).bit_length()  # the smallest power of 2 that fits both
        vectors = torch.tensor(hadamard(order)[:num_classes, :dim], dtype=torch.float32)
    else:
        raise ValueError(f"class vectors are drawn 'normal', 'uniform_int' or 'hadamard', got {draw!r}")
    return F.normalize(vectors, dim=1)


class ClassHead(nn.Module):
    """Maps an image vector f(x) to class logits; fixed heads keep W and b as frozen buffers.

    dot:     logits = W f + b
    cosine:  logits = S * cos(W_j, f) + b   (both sides l2-normalised in the forward pass)
    margins, in training only (labels given): cosface S * (cos - m) and arcface S * cos(theta + m)
    on the true class, so a sweep can ask whether fixing helps those heads too.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        kind: HeadKind = "dot",
        fixed: bool = False,
        scale: float = 1.0,
        bias: bool = True,
        seed: int = 0,
        draw: VectorDraw = "normal",
        learn_scale: bool = False,
        margin: Margin = "none",
        m: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in ("dot", "cosine"):
            raise ValueError(f"head kind must be 'dot' or 'cosine', got {kind!r}")
        if scale <= 0:
            raise ValueError(f"cosine scale S must be > 0, got {scale}")
        if kind == "dot" and (margin != "none" or learn_scale):
            raise ValueError("margins and a learned S need a cosine head")
        self.kind, self.fixed, self.margin, self.m = kind, fixed, margin, float(m)
        scale_value = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_value)
        else:
            self.register_buffer("scale", scale_value)
        weight = draw_class_vectors(num_classes, in_features, seed, draw)
        bias_value = torch.full((num_classes,), BIAS_INIT) if bias else None
        if fixed:
            # Buffers: saved in state_dict, moved by .to(), never handed to an optimiser.
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)
        else:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None

    @property
    def class_vectors(self) -> torch.Tensor:
        """The m x d class vectors W (a detached view), for the paper's measurements."""
        return self.weight.detach()

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "dot":
            return F.linear(features, self.weight, self.bias)
        cosines = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        if labels is not None and self.margin != "none":
            target = F.one_hot(labels, cosines.shape[1]).bool()
            if self.margin == "cosface":
                shifted = cosines - self.m
            else:
                shifted = torch.cos(torch.acos(cosines.clamp(-1 + 1e-7, 1 - 1e-7)) + self.m)
            cosines = torch.where(target, shifted, cosines)
        logits = self.scale * cosines
        return logits + self.bias if self.bias is not None else logits

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        extra = f", S={self.scale.item():g}" if self.kind == "cosine" else ""
        extra += f", margin={self.margin}(m={self.m:g})" if self.margin != "none" else ""
        return f"{d} -> {n}, kind={self.kind}, fixed={self.fixed}{extra}, bias={self.bias is not None}"
