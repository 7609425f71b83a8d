"""Batched augmentation: each image gets its own crop and flip; normalisation centres the pixels."""

import torch

from fixray.trial.augment import augment, normalise
from fixray.trial.contract import Augmentation


def test_random_crop_keeps_shape_and_draws_an_offset_per_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(1, 3, 8, 8)
    batch = image.repeat(64, 1, 1, 1)
    out = augment(batch, Augmentation(crop_padding=2), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 5  # not one crop for the whole batch
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2))
    windows = {tuple(padded[:, y : y + 8, x : x + 8].flatten().tolist()) for y in range(5) for x in range(5)}
    assert all(tuple(o.flatten().tolist()) in windows for o in out)  # every output is a window of the padded image


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
