"""Readers for each dataset's official on-disk format, returning uint8 N x C x H x W arrays.

torchvision downloads and verifies the real files (registry.py); it also checks their md5 on every load,
which rejects small files in the same format, so reading is done here in a few lines per format.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import BinaryIO

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


def _reading(path: Path) -> BinaryIO:
    """Opens a dataset file; a missing, unreadable or looping path is a FormatError naming it, not an OSError."""
    try:
        return open(path, "rb")
    except OSError as error:
        raise FormatError(f"{path}: cannot be read ({error.strerror or error})") from None


def _bytes(path: Path) -> bytes:
    with _reading(path) as f:
        return f.read()


def _lines(path: Path) -> list[str]:
    """A text file's non-empty lines, stripped."""
    try:
        text = _bytes(path).decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(f"{path}: expected UTF-8 text, found a byte it cannot hold at offset {error.start}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _unpickle(path: Path) -> dict:
    # The published pickles were written by Python 2: latin1 turns their keys into str.
    with _reading(path) as f:
        try:
            found = _DataUnpickler(f, encoding="latin1").load()
        except Exception as error:  # any malformed stream: the unpickler raises many kinds, none of them code we run
            raise FormatError(f"{path}: not a readable CIFAR pickle ({type(error).__name__}: {error})") from None
    if not isinstance(found, dict):
        raise FormatError(f"{path}: expected a pickled dict, found {type(found).__name__}")
    return found


def _labels_in_range(labels: np.ndarray, classes: int) -> bool:
    return not len(labels) or 0 <= labels.min() <= labels.max() < classes


def _cifar_batch(path: Path, label_key: str, classes: int) -> Arrays:
    """One batch: 'data' N x 3072 uint8 (CHW rows) and N labels in [0, classes)."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FormatError(f"{path}: expected 'data' as an N x 3072 uint8 array, found {found}")
    labels = np.asarray(labels) if isinstance(labels, list) and all(type(v) is int for v in labels) else None
    if labels is None or labels.shape != (len(data),) or not _labels_in_range(labels, classes):
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


STL10_IMAGE_BYTES = 3 * 96 * 96  # one image in the .bin files


def _stl10_split(folder: Path, split: str) -> Arrays:
    """{split}_X.bin: raw uint8 images, each channel stored column-major; {split}_y.bin: one byte per image, 1..10."""
    images_path, labels_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = _bytes(images_path)
    if not raw or len(raw) % STL10_IMAGE_BYTES:
        raise FormatError(
            f"{images_path}: expected a whole number of 96x96 colour images ({STL10_IMAGE_BYTES} bytes each), "
            f"found {len(raw)} bytes"
        )
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = np.frombuffer(_bytes(labels_path), dtype=np.uint8).astype(np.int64) - 1
    if labels.shape != (len(images),) or not _labels_in_range(labels, 10):
        raise FormatError(
            f"{labels_path}: expected {len(images)} bytes (one label in 1..10 per image of {images_path.name}), "
            f"found {len(labels)} bytes" + ("" if len(labels) != len(images) else " with a label outside 1..10")
        )
    return np.ascontiguousarray(images), labels


def read_stl10(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """stl10_binary/: train_X.bin, train_y.bin (5,000 labelled), test_X.bin, test_y.bin (8,000), class_names.txt."""
    names = _lines(folder / "class_names.txt")
    if len(names) != 10:
        raise FormatError(f"{folder / 'class_names.txt'}: expected 10 class names, one per line, found {len(names)}")
    return _stl10_split(folder, "train"), _stl10_split(folder, "test"), names


TINY_SIZE = (64, 64)  # every Tiny ImageNet image, in pixels


def _decode(paths: list[Path]) -> np.ndarray:
    """JPEGs -> N x 3 x 64 x 64 uint8; a file that is no 64x64 image is named before its pixels are decoded."""
    images = np.empty((len(paths), 3, *TINY_SIZE), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _reading(path) as f:
            try:
                with Image.open(f) as image:
                    if image.size != TINY_SIZE:
                        raise FormatError(f"{path}: expected a 64x64 image, found {image.size[0]}x{image.size[1]}")
                    images[i] = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
            except FormatError:
                raise
            except Exception as error:  # truncated, not an image, a decompression bomb: PIL raises many kinds
                raise FormatError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    return images


def _plain_name(name: str) -> bool:
    """A file name inside its folder: no separators, no '..', so an index file never points elsewhere."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def read_tinyimagenet(folder: Path) -> tuple[Arrays, Arrays, list[str]]:
    """tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt.

    The val split (50 images per class, labelled by the annotations file) is the test set.
    """
    wnids = _lines(folder / "wnids.txt")
    if not wnids or len(set(wnids)) != len(wnids) or not all(_plain_name(w) for w in wnids):
        raise FormatError(f"{folder / 'wnids.txt'}: expected one distinct WordNet id (e.g. n01443537) per line")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    words = dict(line.split("\t", 1) for line in _lines(folder / "words.txt") if "\t" in line)
    names = [words.get(w, w).split(",")[0].strip() for w in wnids]
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise FormatError(f"{folder / 'train' / wnid / 'images'}: expected the class's training JPEGs, found none")
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    annotations = folder / "val" / "val_annotations.txt"
    test_paths, test_labels = [], []
    for number, line in enumerate(_lines(annotations), 1):
        fields = line.split("\t")
        if len(fields) < 2 or not _plain_name(fields[0]) or fields[1] not in index:
            raise FormatError(
                f"{annotations}, line {number}: expected '<file in val/images>\\t<a wnid of wnids.txt>\\t...', "
                f"found {line[:80]!r}"
            )
        test_paths.append(folder / "val" / "images" / fields[0])
        test_labels.append(index[fields[1]])
    return (
        (_decode(train_paths), np.asarray(train_labels, dtype=np.int64)),
        (_decode(test_paths), np.asarray(test_labels, dtype=np.int64)),
        names,
    )


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(io.BytesIO(_bytes(path)), allow_pickle=False)  # an object array would need pickle: refused
    except ValueError as error:
        raise FormatError(f"{path}: not a readable .npy array ({error})") from None


def read_cifar101(folder: Path, version: str) -> Arrays:
    """CIFAR-10.1 (Recht et al. 2018): cifar10.1_<version>_data.npy (N x 32 x 32 x 3 uint8) and _labels.npy."""
    images_path, labels_path = folder / f"cifar10.1_{version}_data.npy", folder / f"cifar10.1_{version}_labels.npy"
    images, labels = _npy(images_path), _npy(labels_path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise FormatError(
            f"{images_path}: expected an N x 32 x 32 x 3 uint8 array, found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),) or not _labels_in_range(labels, 10):
        raise FormatError(
            f"{labels_path}: expected {len(images)} integer labels in [0, 10), one per image, "
            f"found {labels.dtype} of shape {labels.shape}"
        )
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels.astype(np.int64)
