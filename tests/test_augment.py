"""Image augmentation: a random translation is a zero-filled shift of at most p pixels,
every shift is drawn, the same seed gives the same batch, and it is refused for data
that are not images."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from flowerbed.client.augment import translate
from flowerbed.sims.config import ConfigError, parse_scenario


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (C, H, W) moved down dy and right dx, zero-filled (the reference, one image at a time)."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    return F.pad(x, (p, p, p, p))[:, p - dy:p - dy + h, p - dx:p - dx + w]


def test_translation_is_a_zero_filled_shift_of_at_most_p_pixels_and_draws_every_shift():
    x = torch.rand(400, 2, 7, 9)
    out = translate(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for image, moved in zip(x, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(moved, shifted(image, dy, dx))]
        assert len(matches) == 1, "not a shift of at most 2 pixels"
        seen.add(matches[0])
    assert len(seen) == 25  # 400 draws of 25 equally likely shifts


def test_same_seed_same_batch_and_zero_pixels_is_the_identity():
    x = torch.rand(16, 1, 16, 16)
    a, b = (translate(x, 2, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, translate(x, 2, torch.Generator().manual_seed(4)))
    assert translate(x, 0, torch.Generator().manual_seed(3)) is x


def test_translation_is_refused_for_data_that_are_not_images():
    tree = {"rounds": 1, "dataset": {"name": "office_caltech10"}, "partition": {"kind": "domain"},
            "model": {"name": "mlp"}, "strategy": {"name": "fedavg"}, "client": {"translate_pixels": 2}}
    with pytest.raises(ConfigError, match=r"client\.translate_pixels"):
        parse_scenario(tree)
