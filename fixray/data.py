"""Dataset registry: each entry loads train and test splits as normalised image tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fixray.models import InputSpec

DIGITS_TEST_FRACTION = 0.2  # 360 of digits' 1,797 images are held out as the test split
DIGITS_SPLIT_SEED = 0  # fixed, so every trial and every sweep sees the same split


@dataclass(frozen=True)
class Splits:
    """Train and test images (N x C x H x W float32, normalised) with integer labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(channels=self.train_x.shape[1], size=self.train_x.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DatasetLoader = Callable[[Path | None], Splits]
DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    def add(loader: DatasetLoader) -> DatasetLoader:
        DATASETS[name] = loader
        return loader

    return add


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales both splits by the train split's mean and std, so test data never leaks into it."""
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (test - mean) / std


@register_dataset("digits")
def load_digits(data_dir: Path | None = None) -> Splits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): needs no download."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # N x 1 x 8 x 8, values 0..16
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels.numpy(),
    )
    train_x, test_x = _standardise(images[train_idx], images[test_idx])
    return Splits(train_x, labels[train_idx], test_x, labels[test_idx], tuple(str(d) for d in range(10)))


def load_dataset(name: str, data_dir: Path | None = None) -> Splits:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name](data_dir)
