"""Corrupted test sets (paper Table 6) from the `imagecorruptions` functions, made once and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from fixray.crossing.images import ImageSet

Corruption = Literal["impulse_noise", "jpeg_compression", "defocus_blur"]  # the three the paper reports
CORRUPTIONS: tuple[str, ...] = get_args(Corruption)
MIN_SIZE = 32  # imagecorruptions refuses images smaller than 32 x 32


def corrupt_images(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupts uint8 N x C x H x W images (C = 1 or 3); image i's randomness comes from (seed, i) alone."""
    from imagecorruptions import corrupt

    if images.shape[2] < MIN_SIZE or images.shape[3] < MIN_SIZE:
        raise ValueError(
            f"{name} needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {images.shape[2]}x{images.shape[3]}"
        )
    out = np.empty_like(images)
    for i, image in enumerate(images):
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        if hwc.shape[2] == 1:
            hwc = np.repeat(hwc, 3, axis=2)
        image_seed = (seed * 1_000_003 + i) % 2**32
        np.random.seed(image_seed)  # for corruptions that draw from numpy's global generator
        extra = {"seed": image_seed} if name == "impulse_noise" else {}
        result = np.asarray(corrupt(hwc, corruption_name=name, severity=severity, **extra), dtype=np.uint8)
        out[i] = (
            result.transpose(2, 0, 1)
            if images.shape[1] == 3
            else result.mean(axis=2, keepdims=True).round().astype(np.uint8).transpose(2, 0, 1)
        )
    return out


def corrupted_test_set(test: ImageSet, dataset: str, name: str, severity: int, seed: int, cache_dir: Path) -> ImageSet:
    """The corrupted copy of `test`, read from cache_dir when an earlier sweep already made it."""
    path = cache_dir / f"{dataset}-{len(test)}-{name}-s{severity}-seed{seed}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == test.x.shape and cached.dtype == np.uint8:
            return ImageSet(cached, test.y)
    except (OSError, ValueError, EOFError):
        pass  # absent, or not this cache's file: made again below
    images = corrupt_images(test.x, name, severity, seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npy")
    np.save(partial, images)
    partial.replace(path)  # atomic: a concurrent sweep never reads half a file
    return ImageSet(images, test.y)
