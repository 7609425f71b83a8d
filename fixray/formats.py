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

# What the published CIFAR pickles hold besides dicts, lists, strings, bytes and numbers: numpy arrays, and
# (for pickles written by Python 3 at protocol 2) bytes spelled through _codecs.encode.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class FormatError(ValueError):
    """A dataset file that is not what its official format holds; the message names the file."""


class _DataUnpickler(pickle.Unpickler):
    """Unpickles data only: any class or function outside PICKLE_GLOBALS is refused, so a file never runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) in PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a dataset pickle never holds")


def _unpickle(path: Path) -> dict:
    # The published pickles were written by Python 2: latin1 turns their keys into str.
    try:
        with open(path, "rb") as f:
            found = _DataUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise FormatError(f"{path}: not a readable CIFAR pickle ({type(error).__name__}: {error})") from None
    except OSError as error:
        raise FormatError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not isinstance(found, dict):
        raise FormatError(f"{path}: expected a pickled dict, found {type(found).__name__}")
    return found


def _cifar_batch(path: Path, label_key: str, classes: int) -> Arrays:
    """One batch: 'data' N x 3072 uint8 (CHW rows) and N labels in [0, classes)."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FormatError(f"{path}: expected 'data' as an N x 3072 uint8 array, found {found}")
    labels = np.asarray(labels) if isinstance(labels, list) and all(type(v) is int for v in labels) else None
    if (
        labels is None
        or labels.shape != (len(data),)
        or (len(labels) and not 0 <= labels.min() <= labels.max() < classes)
    ):
        raise FormatError(f"{path}: expected '{label_key}' as {len(data)} integers in [0, {classes}), one per image")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _names(path: Path, key: str, classes: int) -> list[str]:
    names = _unpickle(path).get(key)
    if not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) for n in names):
        raise FormatError(f"{path}: expected '{key}' as a list of {classes} class names")
    return names


def read_cifar10(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta."""
    parts = [_cifar_batch(folder / f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _cifar_batch(folder / "test_batch", "labels", 10), _names(folder / "batches.meta", "label_names", 10)


def read_cifar100(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """cifar-100-python/: train, test, meta (fine labels: the 100 classes)."""
    names = _names(folder / "meta", "fine_label_names", 100)
    return _cifar_batch(folder / "train", "fine_labels", 100), _cifar_batch(folder / "test", "fine_labels", 100), names


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
