"""Batched, seeded data augmentation for image batches (N, C, H, W), applied on the
fly to each training batch; every draw comes from the training loop's generator, so
the same seed gives the same augmented batches."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def translate(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by (dy, dx) ~ U{-pixels..pixels}^2 with zero fill: torchvision's
    ``RandomCrop(size, padding=pixels)``, for the whole batch at once.

    ``x`` (N, C, H, W) -> (N, C, H, W). Zero padding to (H + 2p, W + 2p), then image n
    is read from rows dy_n + [0, H) and columns dx_n + [0, W) of its padded copy.
    """
    if pixels == 0 or len(x) == 0:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).to(x.device)
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def weak(x: torch.Tensor, generator: torch.Generator, pixels: int, flip: bool) -> torch.Tensor:
    """The weak view (FixMatch's, for grey images): a horizontal flip with probability
    1/2 where flips keep the class (never for digits), then a translation by up to
    ``pixels`` (FixMatch: 12.5% of the side)."""
    if flip:
        x = hflip(x, generator)
    return translate(x, pixels, generator)


def _uniform(generator: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device)


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 30.0, shear: float = 0.3,
                  shift: float = 0.125) -> torch.Tensor:
    """Each image rotated by U(-degrees, degrees), sheared along x by U(-shear, shear) and
    shifted by U(-shift, shift) of its side on each axis, zero-filled (one affine grid
    for the batch). ``x`` (N, C, H, W)."""
    n, device = len(x), x.device
    angle = torch.deg2rad(_uniform(generator, n, -degrees, degrees, device))
    s = _uniform(generator, n, -shear, shear, device)
    t = _uniform(generator, 2 * n, -2 * shift, 2 * shift, device).view(n, 2)  # grid units span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation times shear [[1, s], [0, 1]], then the shift.
    theta = torch.stack([torch.stack([cos, cos * s - sin, t[:, 0]], 1),
                         torch.stack([sin, sin * s + cos, t[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """a + factor (b - a) per image, clipped to [0, 1]."""
    return (a + factor.view(-1, 1, 1, 1) * (b - a)).clamp(0, 1)


def _blurred(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], device=x.device) / 13  # PIL's SMOOTH
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(x.shape[1], 1, 3, 3),
                    groups=x.shape[1])


def _photometric(name: str, x: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """One RandAugment-style colour op at ``magnitude`` in [0, 1] per image."""
    if name == "brightness":  # blend with black: factor 0.05 .. 1.95
        return _blend(torch.zeros_like(x), x, 0.05 + 1.9 * magnitude)
    if name == "contrast":  # blend with the image's mean grey
        mean = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return _blend(mean, x, 0.05 + 1.9 * magnitude)
    if name == "sharpness":  # blend with a blurred copy
        return _blend(_blurred(x), x, 0.05 + 1.9 * magnitude)
    if name == "posterize":  # keep 4 .. 8 bits
        levels = (2 ** (4 + torch.round(4 * magnitude))).view(-1, 1, 1, 1)
        return torch.floor(x * (levels - 1) + 0.5) / (levels - 1)
    if name == "solarize":  # invert the pixels above a threshold in [0, 1]
        threshold = magnitude.view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1 - x, x)
    raise ValueError(name)


PHOTOMETRIC = ("brightness", "contrast", "sharpness", "posterize", "solarize")


def cutout(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.5) -> torch.Tensor:
    """A square of ``fraction`` of the side, centred at a uniform pixel, set to 0.5 grey."""
    n, _, h, w = x.shape
    size = max(1, round(fraction * min(h, w)))
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    top, left = (cy - size // 2)[:, None, None], (cx - size // 2)[:, None, None]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside[:, None], torch.full_like(x, 0.5), x)


def strong(x: torch.Tensor, generator: torch.Generator, flip: bool, ops: int = 2) -> torch.Tensor:
    """FixMatch's strong view for grey images, batched: the weak flip, a random affine
    (rotation +-30 deg, shear +-0.3, shift +-12.5%), ``ops`` colour ops drawn per image from
    :data:`PHOTOMETRIC` at random magnitudes (RandAugment), then Cutout of half the side."""
    if len(x) == 0:
        return x
    if flip:
        x = hflip(x, generator)
    x = random_affine(x, generator)
    n = len(x)
    for _ in range(ops):
        choice = torch.randint(0, len(PHOTOMETRIC), (n,), generator=generator).to(x.device)
        magnitude = torch.rand(n, generator=generator).to(x.device)
        out = x.clone()
        for k, name in enumerate(PHOTOMETRIC):
            chosen = choice == k
            if chosen.any():
                out[chosen] = _photometric(name, x[chosen], magnitude[chosen])
        x = out
    return cutout(x, generator)
