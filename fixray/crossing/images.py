"""The images a trial trains and is tested on, as the driver ships them: uint8 arrays, shared through Ray's
object store by every trial on a node without a copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """What a backbone is built for: image channels and side length in pixels."""

    channels: int
    size: int


@dataclass(frozen=True)
class ImageSet:
    """Labelled images: x is N x C x H x W uint8, y is N int64 class indices."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """A training set, its test set, and extra test sets evaluated after training (keyed by metric prefix)."""

    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]
    extra: dict[str, ImageSet] = field(default_factory=dict)  # e.g. "robust/impulse_noise", "gen"

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(channels=self.train.x.shape[1], size=self.train.x.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        pixels = self.train.x.transpose(1, 0, 2, 3).reshape(self.train.x.shape[1], -1)
        mean = tuple(float(pixels[c].mean(dtype=np.float64)) / 255 for c in range(len(pixels)))
        std = tuple(float(pixels[c].std(dtype=np.float64)) / 255 or 1.0 for c in range(len(pixels)))
        return mean, std
