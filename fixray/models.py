"""Backbone registry and the classifier that joins a backbone to a ClassHead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from fixray.heads import ClassHead


@dataclass(frozen=True)
class InputSpec:
    """What a backbone is built for: image channels and side length in pixels."""

    channels: int
    size: int


BackboneFactory = Callable[[InputSpec], nn.Module]
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Adds a backbone constructor; the module it builds must set `feature_dim`."""

    def add(factory: BackboneFactory) -> BackboneFactory:
        BACKBONES[name] = factory
        return factory

    return add


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A three-block CNN that trains in seconds on the CPU; sized for 8x8 to 32x32 inputs."""

    def __init__(self, spec: InputSpec, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _conv_bn_relu(spec.channels, width),
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_backbone("small_cnn")
def small_cnn(spec: InputSpec) -> nn.Module:
    return SmallCNN(spec)


class Classifier(nn.Module):
    """Backbone f(x) followed by a ClassHead; `embed_and_classify` exposes f(x) for the measurements."""

    def __init__(self, backbone: nn.Module, head: ClassHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return features, self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_classifier(
    backbone: str, spec: InputSpec, num_classes: int, *, kind: str, fixed: bool, scale: float, bias: bool, seed: int
) -> Classifier:
    """Builds backbone and head with every random draw taken from `seed`."""
    if backbone not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone!r}; registered: {sorted(BACKBONES)}")
    torch.manual_seed(seed)
    body = BACKBONES[backbone](spec)
    head = ClassHead(body.feature_dim, num_classes, kind=kind, fixed=fixed, scale=scale, bias=bias, seed=seed)
    return Classifier(body, head)
