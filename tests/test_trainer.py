"""Local training loops: batches that BatchNorm can train on."""

from __future__ import annotations

import pytest
import torch

from flowerbed.client.trainer import TrainSettings, round_batches, round_steps, train_local
from flowerbed.sims.models import build_model


@pytest.mark.parametrize("num", [17, 16, 9, 1])
def test_a_last_batch_of_one_joins_the_one_before_for_batchnorm_models(num):
    x, y = torch.rand(num, 1, 28, 28), torch.arange(num) % 10
    model = build_model("cnn_bn", (1, 28, 28), 10, hidden=16)
    settings = TrainSettings.from_scenario(_client(), model=model)
    assert settings.min_batch == 2
    assert TrainSettings.from_scenario(_client(), model=build_model("mlp", (1, 28, 28), 10)).min_batch == 1
    drawn = list(round_batches(x, y, settings, torch.Generator().manual_seed(0)))
    assert len(drawn) == round_steps(num, settings)
    # Every sample once an epoch (two epochs here), and no batch of one unless that is all there is.
    assert sorted(torch.cat([b for _, b in drawn]).tolist()) == sorted((y.tolist()) * 2)
    assert all(len(b) >= 2 for _, b in drawn) or num == 1
    if num > 1:  # 17 = 8 + 9 at batch size 8 raised "Expected more than 1 value per channel" before
        train_local(model, x, y, settings, torch.Generator().manual_seed(0))


def _client():
    from flowerbed.sims.config import ClientConfig

    return ClientConfig(local_epochs=2, batch_size=8, lr=0.01)
