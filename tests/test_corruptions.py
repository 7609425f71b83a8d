"""Corrupted test sets: changed, same shape and dtype, deterministic per seed, graded by severity, cached."""

import numpy as np
import pytest

from fixray.crossing.images import ImageSet
from fixray.data.corruptions import CORRUPTIONS, corrupt_images, corrupted_test_set


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 32, dtype=np.float64)
    base = (smooth[None, :] + smooth[:, None]) / 2  # a gradient, so blur and JPEG have structure to change
    batch = np.stack([np.stack([base, base[::-1], base.T]) for _ in range(3)]).astype(np.uint8)
    return np.clip(batch + rng.integers(-20, 20, batch.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_changes_images_and_keeps_shape_and_dtype(images, name):
    out = corrupt_images(images, name, severity=3, seed=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert (out != images).mean() > 0.05


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_is_deterministic_for_a_seed(images, name):
    assert np.array_equal(corrupt_images(images, name, 3, seed=7), corrupt_images(images, name, 3, seed=7))


def test_impulse_noise_differs_between_seeds(images):
    assert not np.array_equal(
        corrupt_images(images, "impulse_noise", 3, seed=1), corrupt_images(images, "impulse_noise", 3, seed=2)
    )


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_5_changes_more_than_severity_1(images, name):
    def change(severity):
        return np.abs(corrupt_images(images, name, severity, seed=0).astype(int) - images).mean()

    assert change(5) > change(1)


def test_grayscale_images_are_corrupted_as_grayscale(images):
    gray = images[:, :1]
    out = corrupt_images(gray, "defocus_blur", 2, seed=0)
    assert out.shape == gray.shape and not np.array_equal(out, gray)


def test_small_images_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 32x32"):
        corrupt_images(np.zeros((1, 1, 8, 8), np.uint8), "impulse_noise", 1, 0)


def test_corrupted_sets_are_made_once_then_read_from_the_cache(images, tmp_path):
    test = ImageSet(images, np.arange(len(images)))
    first = corrupted_test_set(test, "toy", "jpeg_compression", 4, 0, tmp_path)
    [cached] = tmp_path.glob("*.npy")
    stamp = cached.stat().st_mtime_ns
    again = corrupted_test_set(test, "toy", "jpeg_compression", 4, 0, tmp_path)
    assert np.array_equal(first.x, again.x) and np.array_equal(again.y, test.y)
    assert cached.stat().st_mtime_ns == stamp and len(list(tmp_path.iterdir())) == 1
