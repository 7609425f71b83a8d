"""Long-tailed training sets (CIFAR-10/100-LT as Cao et al. 2019 build them), where fixed class vectors are said
to help most: class c keeps n_max * ratio^(c/(K-1)) of its images; the test set is untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fixray.crossing.images import ImageSet, Splits


def kept_per_class(largest: int, classes: int, ratio: float) -> list[int]:
    """Images class c keeps: int(largest * ratio ** (c / (classes - 1))), from `largest` down to largest * ratio."""
    if classes < 2:
        return [largest] * classes
    return [int(largest * ratio ** (c / (classes - 1))) for c in range(classes)]


def long_tailed(images: ImageSet, ratio: float, seed: int) -> ImageSet:
    """The images each class keeps, chosen by a seeded shuffle of that class's images, in their file order after."""
    classes = int(images.y.max()) + 1
    counts = np.bincount(images.y, minlength=classes)
    rng = np.random.default_rng(seed)
    kept = []
    for label, keep in enumerate(kept_per_class(int(counts.max()), classes, ratio)):
        members = np.flatnonzero(images.y == label)
        kept.append(np.sort(rng.permutation(members)[: min(keep, len(members))]))
    chosen = np.concatenate(kept)
    chosen.sort()
    return ImageSet(images.x[chosen], images.y[chosen])


def with_long_tail(splits: Splits, ratio: float | None, seed: int) -> Splits:
    """The splits a trial trains on: its training set long-tailed when `ratio` is set (each trial cuts its own, so one
    sweep can compare balanced and long-tailed sets; the normalisation statistics are then the kept images')."""
    if ratio is None or ratio == 1:  # every class keeps all of its images
        return splits
    return replace(splits, train=long_tailed(splits.train, ratio, seed))
