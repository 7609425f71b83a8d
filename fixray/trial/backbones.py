"""The backbone registry, light enough for a sweep file's checks and its compute plan to read without torch: each
backbone's name, the shape of its last feature map, and the function that builds its body (whose layers, in
layers.py, are imported only when it is built)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fixray.crossing.images import InputSpec

if TYPE_CHECKING:
    from torch import nn

Pooling = Literal["global", "authors"]
AUTHORS_POOL = 4  # the authors' `F.avg_pool2d(out, 4)` before flattening
PAPER_STRIDE = 8  # the three paper backbones downsample by 8 in all (three stride-2 stages)


@dataclass(frozen=True)
class BackboneShape:
    """A body's last feature map: its channels, and how much it downsamples the input's side."""

    channels: int
    stride: int

    def feature_dim(self, spec: InputSpec, pooling: Pooling) -> int:
        """len(f(x)) at an input size. Global pooling averages the whole map (the same size at every input size); the
        authors' pooling averages 4x4 windows and flattens what is left, so f(x) grows with the input: for ResNet18 512
        values at 32 px, 2048 at 64 px and 4608 at 96 px (their STL-10 EMBEDDING_SIZE). ValueError where the authors'
        pooling cannot apply."""
        if pooling == "global":
            return self.channels
        side = spec.size // self.stride
        if side < AUTHORS_POOL:
            raise ValueError(
                f"the authors' pooling needs a feature map of at least {AUTHORS_POOL}x{AUTHORS_POOL}; this backbone "
                f"maps {spec.size} px images to {side}x{side}: use pooling: global"
            )
        return self.channels * (side // AUTHORS_POOL) ** 2


@dataclass(frozen=True)
class BackboneEntry:
    shape: BackboneShape
    body: Callable[[int], nn.Sequential]  # input channels -> the body, up to its last feature map


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, channels: int, stride: int) -> Callable:
    """Adds a backbone: a function (input channels -> body) whose last map has `channels` at 1/`stride` of the side."""

    def add(body: Callable[[int], nn.Sequential]) -> Callable[[int], nn.Sequential]:
        BACKBONES[name] = BackboneEntry(BackboneShape(channels, stride), body)
        return body

    return add


def feature_dim(backbone: str, spec: InputSpec, pooling: Pooling) -> int:
    """len(f(x)) of a registered backbone at an input size, without building it."""
    return BACKBONES[backbone].shape.feature_dim(spec, pooling)


@register_backbone("small_cnn", channels=64, stride=2)
def small_cnn(in_channels: int) -> nn.Sequential:
    """A three-block CNN that trains in seconds on the CPU; sized for 8x8 to 32x32 inputs."""
    from fixray.trial.layers import small_cnn_body

    return small_cnn_body(in_channels, width=32, channels=64)


# --- the paper's backbones, in their common CIFAR form (3x3 stride-1 stem, no max-pool) --------------
# Global pooling adapts them to 32x32 (CIFAR), 64x64 (Tiny ImageNet) and 96x96 (STL-10) alike; the
# authors' pooling keeps more of the map at larger inputs.


@register_backbone("resnet18", channels=512, stride=PAPER_STRIDE)
def resnet18(in_channels: int) -> nn.Sequential:
    from fixray.trial.layers import resnet18_body

    return resnet18_body(in_channels)


@register_backbone("preact_resnet18", channels=512, stride=PAPER_STRIDE)
def preact_resnet18(in_channels: int) -> nn.Sequential:
    from fixray.trial.layers import resnet18_body

    return resnet18_body(in_channels, preact=True)


@register_backbone("mobilenetv2", channels=1280, stride=PAPER_STRIDE)
def mobilenetv2(in_channels: int) -> nn.Sequential:
    from fixray.trial.layers import mobilenetv2_body

    return mobilenetv2_body(in_channels)
