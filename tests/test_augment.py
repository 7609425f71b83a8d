"""Batched augmentation: each image gets its own crop and flip; normalisation centres the pixels."""

import pytest
import torch

from fixray.crossing.contract import Augmentation
from fixray.data.registry import DATASETS
from fixray.trial.augment import augment, normalise


def test_random_crop_keeps_shape_and_draws_an_offset_per_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(1, 3, 8, 8)
    batch = image.repeat(64, 1, 1, 1)
    out = augment(batch, Augmentation(crop_padding=2), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 5  # not one crop for the whole batch
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2))
    windows = {tuple(padded[:, y : y + 8, x : x + 8].flatten().tolist()) for y in range(5) for x in range(5)}
    assert all(tuple(o.flatten().tolist()) in windows for o in out)  # every output is a window of the padded image


def test_a_crop_reaches_every_offset_from_zero_to_twice_the_padding():
    image = torch.arange(8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8) + 1  # no pixel equals the zero padding
    out = augment(image.repeat(2000, 1, 1, 1), Augmentation(crop_padding=3), torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[0], (3, 3, 3, 3))
    offsets = {
        (y, x) for o in out for y in range(7) for x in range(7) if torch.equal(o, padded[:, y : y + 8, x : x + 8])
    }
    assert offsets == {(y, x) for y in range(7) for x in range(7)}  # 0..2p on both axes, the corners included


# Each dataset's standard training augmentation: random crop with this zero padding, and a horizontal flip.
STANDARD_PADDING = {"cifar10": 4, "cifar100": 4, "stl10": 10, "tinyimagenet": 8}


@pytest.mark.parametrize(("dataset", "padding"), sorted(STANDARD_PADDING.items()))
def test_each_dataset_trains_with_its_standard_crop_padding_and_flip(dataset, padding):
    assert DATASETS[dataset].augmentation == Augmentation(crop_padding=padding, flip=True)


def test_flip_mirrors_about_half_of_the_batch():
    batch = torch.rand(400, 1, 4, 4)
    out = augment(batch, Augmentation(flip=True), torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, b.flip(2)) for o, b in zip(out, batch)])
    kept = torch.tensor([torch.equal(o, b) for o, b in zip(out, batch)])
    assert (flipped | kept).all() and 150 < flipped.sum() < 250


def test_no_augmentation_is_the_identity_and_uint8_stays_uint8():
    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment(batch, Augmentation(), torch.Generator()), batch)
    assert augment(batch, Augmentation(crop_padding=1, flip=True), torch.Generator()).dtype == torch.uint8


def test_normalise_uses_per_channel_statistics():
    batch = torch.randint(0, 256, (500, 3, 8, 8), dtype=torch.uint8)
    pixels = batch.float().div(255).transpose(0, 1).reshape(3, -1)
    out = normalise(batch, pixels.mean(1), pixels.std(1))
    per_channel = out.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(per_channel.std(1), torch.ones(3), atol=1e-3)
