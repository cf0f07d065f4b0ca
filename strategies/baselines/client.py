"""Client halves of the baselines: which parameters a client keeps, freezes or
fine-tunes, and FedProx's proximal term (read from Flower's own config key)."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord

from flowerbed.client.mods import Job, Mod, Step, freeze, keep_local, proximal
from flowerbed.client.trainer import TrainSettings, finetune
from flowerbed.sims.models import batchnorm_keys
from flowerbed.strategies.baselines.params import FedBABUParams, FedProxParams
from flowerbed.strategies.contract import ClientHalf, NoParams

#: The classifier of every flowerbed model (``SplitModel.head``).
HEAD = ("head",)


class FedProxClient(ClientHalf):
    """Flower's FedProx protocol: ``proximal-mu`` in the train config."""

    name = "fedprox"
    params_type = FedProxParams
    key = "proximal-mu"  # type: ignore[assignment] - Flower's key, not ours

    def params(self, config: ConfigRecord) -> FedProxParams:
        return FedProxParams(proximal_mu=float(config[self.key]))

    def train_mods(self, params: FedProxParams, job: Job) -> list[Mod]:
        return [proximal(params.proximal_mu)]


class KeepLocalClient(ClientHalf):
    """The client keeps the parameters ``kept`` and never uploads them."""

    kept: tuple[str, ...] = ()

    def train_mods(self, params: NoParams, job: Job) -> list[Mod]:
        return [keep_local(self.kept)]

    def evaluate_mods(self, params: NoParams, job: Job) -> list[Mod]:
        return [keep_local(self.kept, store=False)]


class FedPerClient(KeepLocalClient):
    name, kept = "fedper", HEAD


class LocalOnlyClient(KeepLocalClient):
    name, kept = "local", ("*",)


def keep_batchnorm(store: bool = True) -> Mod:
    """FedBN: the model's BatchNorm layers (found by type; exact keys) stay local."""

    def mod(job: Job, call_next: Step) -> None:
        keep_local(tuple(f"={k}" for k in batchnorm_keys(job.model)), store=store)(job, call_next)

    return mod


class FedBNClient(ClientHalf):
    name = "fedbn"

    def train_mods(self, params: NoParams, job: Job) -> list[Mod]:
        return [keep_batchnorm()]

    def evaluate_mods(self, params: NoParams, job: Job) -> list[Mod]:
        return [keep_batchnorm(store=False)]


def finetune_head(epochs: int) -> Mod:
    """Score a copy of the model whose head was first trained ``epochs`` epochs on the
    client's labelled data (seeded by the round), the body frozen."""

    def mod(job: Job, call_next: Step) -> None:
        settings = TrainSettings.from_scenario(job.scenario.client, model=job.model)
        job.model = finetune(job.model, job.data, settings, HEAD, epochs,
                             torch.Generator().manual_seed(job.seed() + 1))
        call_next(job)

    return mod


class FedBABUClient(ClientHalf):
    name = "fedbabu"
    params_type = FedBABUParams

    def train_mods(self, params: FedBABUParams, job: Job) -> list[Mod]:
        return [freeze(HEAD)]

    def evaluate_mods(self, params: FedBABUParams, job: Job) -> list[Mod]:
        return [finetune_head(params.finetune_epochs)]
