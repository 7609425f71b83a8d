"""The backbones' layers and pooling (their registry, light, is backbones.py) and the classifier that joins a backbone
to a head."""

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


# --- the layers of the registered backbones (backbones.py) ------------------------------------------


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
