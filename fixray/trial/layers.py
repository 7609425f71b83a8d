"""The layers of the registered backbones (backbones.py), built only when a trial builds its model."""

from __future__ import annotations

import torch
from torch import nn


def small_cnn_body(in_channels: int, width: int, channels: int) -> nn.Sequential:
    """Three conv-BN-ReLU blocks, a 2x2 max-pool before the last."""
    return nn.Sequential(
        _conv_bn_relu(in_channels, width),
        _conv_bn_relu(width, 2 * width),
        nn.MaxPool2d(2),
        _conv_bn_relu(2 * width, channels),
    )


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


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


def resnet18_body(channels: int, preact: bool = False) -> nn.Sequential:
    """CIFAR ResNet18 (and its pre-activation variant) up to its 512-channel map, 1/8 of the input's side."""
    block = PreActBlock if preact else BasicBlock
    stem: list[nn.Module] = [nn.Conv2d(channels, 64, 3, 1, 1, bias=False)]
    if not preact:
        stem += [nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    layers, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [block(cin, cout, stride), block(cout, cout, 1)]
        cin = cout
    tail: list[nn.Module] = [nn.BatchNorm2d(512), nn.ReLU(inplace=True)] if preact else []
    return nn.Sequential(*stem, *layers, *tail)


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


MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenetv2_body(channels: int) -> nn.Sequential:
    """CIFAR MobileNetV2 (stride 1 in the stem and the second stage) up to its 1,280-channel map, 1/8 of the side."""
    layers: list[nn.Module] = [nn.Conv2d(channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)]
    cin = 32
    for expansion, cout, blocks, stride in MOBILENETV2_STAGES:
        for i in range(blocks):
            layers.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(inplace=True))
