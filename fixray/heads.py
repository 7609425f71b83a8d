"""The paper's classification layer: dot-product or cosine logits over fixed or learned class vectors."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

HeadKind = Literal["dot", "cosine"]

BIAS_INIT = 0.01  # the authors' public code initialises every bias to 0.01


def draw_class_vectors(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """Random class vectors with l2-normalised rows, reproducible from `seed` alone."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(num_classes, dim, generator=generator)
    return F.normalize(vectors, dim=1)


class ClassHead(nn.Module):
    """Maps an image vector f(x) to class logits; fixed heads keep W and b as frozen buffers.

    dot:    logits = W f + b
    cosine: logits = S * cos(W_j, f) + b   (both sides l2-normalised in the forward pass)
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
    ) -> None:
        super().__init__()
        if kind not in ("dot", "cosine"):
            raise ValueError(f"head kind must be 'dot' or 'cosine', got {kind!r}")
        if scale <= 0:
            raise ValueError(f"cosine scale S must be > 0, got {scale}")
        self.kind = kind
        self.fixed = fixed
        self.scale = float(scale)
        weight = draw_class_vectors(num_classes, in_features, seed)
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

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "dot":
            return F.linear(features, self.weight, self.bias)
        cosines = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        logits = self.scale * cosines
        return logits + self.bias if self.bias is not None else logits

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        scale = f", S={self.scale:g}" if self.kind == "cosine" else ""
        return f"{d} -> {n}, kind={self.kind}, fixed={self.fixed}{scale}, bias={self.bias is not None}"
