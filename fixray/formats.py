"""Readers for each dataset's official on-disk format, returning uint8 N x C x H x W arrays.

torchvision downloads and verifies the real files (data.py); it also checks their md5 on every load,
which rejects small files in the same format, so reading is done here in a few lines per format.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

Arrays = tuple[np.ndarray, np.ndarray]  # images N x C x H x W uint8, labels N int64


def _unpickle(path: Path) -> dict:
    # The published pickles were written by Python 2: latin1 turns their keys into str.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_batch(path: Path, label_key: str) -> Arrays:
    batch = _unpickle(path)
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[label_key], dtype=np.int64)


def read_cifar10(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta."""
    parts = [_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _cifar_batch(folder / "test_batch", "labels"), list(_unpickle(folder / "batches.meta")["label_names"])


def read_cifar100(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """cifar-100-python/: train, test, meta (fine labels: the 100 classes)."""
    names = list(_unpickle(folder / "meta")["fine_label_names"])
    return _cifar_batch(folder / "train", "fine_labels"), _cifar_batch(folder / "test", "fine_labels"), names


def _stl10_split(folder: Path, split: str) -> Arrays:
    # Raw uint8 stored column-major per channel: transpose H and W back.
    images = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    return np.ascontiguousarray(images), labels


def read_stl10(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """stl10_binary/: train_X.bin, train_y.bin (5,000 labelled), test_X.bin, test_y.bin (8,000), class_names.txt."""
    names = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]
    return _stl10_split(folder, "train"), _stl10_split(folder, "test"), names


def _decode(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for p in paths])


def read_tinyimagenet(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt.

    The val split (50 images per class, labelled by the annotations file) is the test set.
    """
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    words = dict(line.split("\t", 1) for line in (folder / "words.txt").read_text().splitlines() if "\t" in line)
    names = [words.get(w, w).split(",")[0].strip() for w in wnids]
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    test_paths, test_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            file, wnid = line.split("\t")[:2]
            test_paths.append(folder / "val" / "images" / file)
            test_labels.append(index[wnid])
    return (
        (_decode(train_paths), np.asarray(train_labels, dtype=np.int64)),
        (_decode(test_paths), np.asarray(test_labels, dtype=np.int64)),
        names,
    )


def read_cifar101(folder: Path, version: str) -> Arrays:
    """CIFAR-10.1 (Recht et al. 2018): cifar10.1_<version>_data.npy (N x 32 x 32 x 3) and _labels.npy."""
    images = np.load(folder / f"cifar10.1_{version}_data.npy").astype(np.uint8).transpose(0, 3, 1, 2)
    labels = np.load(folder / f"cifar10.1_{version}_labels.npy").astype(np.int64)
    return np.ascontiguousarray(images), labels
