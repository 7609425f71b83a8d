"""Per-image random crop and flip on whole batches, and normalisation: uint8 images in, model inputs out.

Batched on the device the model trains on: torchvision's transforms draw one random crop per call, so
applying them image by image in Python would cost more than a small model's step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fixray.crossing.contract import Augmentation


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 with per-channel mean 0 and std 1 (mean and std of [0, 1] pixels)."""
    return (images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def augment(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Zero-pads then crops each image at its own random offset, and flips half of them; shape is kept."""
    n, _, h, w = images.shape
    p = augmentation.crop_padding
    if p > 0:
        padded = F.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # n x 1 x h x 1
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # n x 1 x 1 x w
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    if augmentation.flip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images
