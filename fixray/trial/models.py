"""A registered backbone built and pooled (its registry, light, is backbones.py; its layers layers.py) and the
classifier that joins it to a head."""

from __future__ import annotations

import torch
from torch import nn

from fixray.crossing.contract import HeadConfig
from fixray.crossing.images import InputSpec
from fixray.trial.backbones import AUTHORS_POOL, BACKBONES, BackboneShape, Pooling
from fixray.trial.heads import ClassHead, build_head


class Backbone(nn.Module):
    """A feature-map body pooled into the image vector f(x) of `feature_dim` values (see BackboneShape.feature_dim)."""

    def __init__(self, body: nn.Sequential, shape: BackboneShape, spec: InputSpec, pooling: Pooling) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = shape.feature_dim(spec, pooling)  # ValueError where the pooling cannot apply
        if pooling == "global":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.pool = nn.Sequential(nn.AvgPool2d(AUTHORS_POOL), nn.Flatten())
        self.norm: nn.Module = nn.Identity()

    def standardise_features(self, standardise: bool) -> Backbone:
        """Each pooled feature standardised by its batch statistics (running ones in evaluation), with no learned scale
        or shift, so features that leave a ReLU all >= 0 become centred and any class vector can win: the last layer
        every head, fixed or learned, shares, and nothing a head could learn."""
        if standardise:
            self.norm = nn.BatchNorm1d(self.feature_dim, affine=False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pool(self.body(x)))


def build_backbone(name: str, spec: InputSpec, pooling: Pooling = "global") -> Backbone:
    """A registered backbone's body, pooled, at an input size."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    entry = BACKBONES[name]
    return Backbone(entry.body(spec.channels), entry.shape, spec, pooling)


class Classifier(nn.Module):
    """Backbone f(x) followed by a ClassHead; `embed_and_classify` exposes the image vectors h the head scores (f(x),
    or its projection) for the measurements."""

    def __init__(self, backbone: nn.Module, head: ClassHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed_and_classify(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits); with labels (training), margin heads apply their margin to the true class."""
        embedded = self.head.embed(self.backbone(x))
        return embedded, self.head.classify(embedded, labels)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, embedded: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits, or (h, logits) with `embedded` (a loss that reads h; through DDP, whose hooks wrap forward
        alone); with labels (training), margin heads apply their margin to the true class."""
        found = self.embed_and_classify(x, labels)
        return found if embedded else found[1]


def build_classifier(
    backbone: str,
    spec: InputSpec,
    num_classes: int,
    head: HeadConfig,
    seed: int,
    pooling: Pooling = "global",
    standardise_features: bool = False,
) -> Classifier:
    """Builds the backbone (its features standardised if asked) and the head `head` describes, with every random draw
    taken from `seed`."""
    torch.manual_seed(seed)
    body = build_backbone(backbone, spec, pooling).standardise_features(standardise_features)
    return Classifier(body, build_head(head.kind, body.feature_dim, num_classes, seed, **head.options()))
