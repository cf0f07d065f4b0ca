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
