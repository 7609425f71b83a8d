"""Backbone registry and the classifier that joins a backbone to a ClassHead."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fixray.data import InputSpec
from fixray.heads import ClassHead, build_head
from fixray.trial import HeadConfig

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

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; with labels (training), margin heads apply their margin to the true class."""
        return self.head(self.backbone(x), labels)


def build_classifier(backbone: str, spec: InputSpec, num_classes: int, head: HeadConfig, seed: int) -> Classifier:
    """Builds the backbone and the head `head` describes, with every random draw taken from `seed`."""
    if backbone not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone!r}; registered: {sorted(BACKBONES)}")
    torch.manual_seed(seed)
    body = BACKBONES[backbone](spec)
    return Classifier(body, build_head(head.kind, body.feature_dim, num_classes, seed, **head.options()))


# --- the paper's backbones, in their common CIFAR form (3x3 stride-1 stem, no max-pool) --------------
# Global average pooling adapts them to 32x32 (CIFAR), 64x64 (Tiny ImageNet) and 96x96 (STL-10) alike.


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """He et al. 2016 'Identity Mappings': BN-ReLU before each convolution."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class ResNet18(nn.Module):
    """CIFAR ResNet18 (and its pre-activation variant): image vector f(x) of 512 values."""

    def __init__(self, spec: InputSpec, preact: bool = False) -> None:
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.feature_dim = 512
        stem: list[nn.Module] = [nn.Conv2d(spec.channels, 64, 3, 1, 1, bias=False)]
        if not preact:
            stem += [nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [block(cin, cout, stride), block(cout, cout, 1)]
            cin = cout
        tail: list[nn.Module] = [nn.BatchNorm2d(512), nn.ReLU(inplace=True)] if preact else []
        self.body = nn.Sequential(*stem, *layers, *tail, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = None
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if not self.use_residual:
            return out
        return out + (self.shortcut(x) if self.shortcut is not None else x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 (stride 1 in the stem and the second stage): image vector f(x) of 1,280 values."""

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.feature_dim = 1280
        layers: list[nn.Module] = [
            nn.Conv2d(spec.channels, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        ]
        cin = 32
        for expansion, cout, blocks, stride in self.STAGES:
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        layers += [
            nn.Conv2d(320, 1280, 1, bias=False),
            nn.BatchNorm2d(1280),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_backbone("resnet18")
def resnet18(spec: InputSpec) -> nn.Module:
    return ResNet18(spec)


@register_backbone("preact_resnet18")
def preact_resnet18(spec: InputSpec) -> nn.Module:
    return ResNet18(spec, preact=True)


@register_backbone("mobilenetv2")
def mobilenetv2(spec: InputSpec) -> nn.Module:
    return MobileNetV2(spec)
