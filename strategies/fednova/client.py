"""FedNova's client half: report how many local steps the client took."""

from __future__ import annotations

import math

from flowerbed.client.mods import Job, Mod, report
from flowerbed.sims.task import GraphData
from flowerbed.strategies.contract import ClientHalf, NoParams
from flowerbed.strategies.fednova.server import LOCAL_STEPS


def local_steps(job: Job) -> dict[str, int]:
    """tau_k: minibatch steps (arrays), or one full-batch step per epoch (graphs)."""
    s = job.settings
    per_epoch = 1 if isinstance(job.data, GraphData) else math.ceil(job.data.num_train / s.batch_size)
    return {LOCAL_STEPS: s.local_epochs * per_epoch}


class FedNovaClient(ClientHalf):
    name = "fednova"

    def train_mods(self, params: NoParams, job: Job) -> list[Mod]:
        return [report(local_steps)]
