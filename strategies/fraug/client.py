"""FRAug's client half: FedBN's local BatchNorm, and a local update of three steps per
batch (spec fraug.md §2.2, §2.6). The RTNet and the class prototypes live in the
client's state and never leave it; the generator G is received, trained and sent back.

Per batch (x, y), with lambda_t and the residual scale s_t of the round::

    u = f(x);  mu_c <- (1 - m) mu_c + m mean(u_i : y_i = c)        (detached, classes in the batch)
    no grad:   y~ cyclic labels;  u~_c = mu_y~ + s_t phi(G(z, y~), y~);  u~ = u + s_t phi(G(z', y), y)
    theta:     (1 - lambda_t) CE(h(u), y) + lambda_t / 2 [CE(h(u~_c), y~) + CE(h(u~), y)]
    G:         CE(h(G(z, y~)), y~) - lambda_G D_G(G(z, y~), anchor)
    phi:       -1/2 [H(h(u~_c)) + H(h(u~))] + lambda_RT / 2 [D_RT(u~_c, mu_y~) + D_RT(u~, u)]

The synthetic CE reaches only the head (the synthetic embeddings are built without
gradient); G's and phi's steps leave the classifier alone. Batches are drawn exactly as
the generic trainer draws them, and the noise from a generator of its own, so with
lambda_t = 0 the classifier's training is FedBN's, bit for bit.
"""

from __future__ import annotations

import math

import torch
from flwr.app import ArrayRecord
from torch import nn
from torch.nn import functional as F

from flowerbed.client.mods import Job, Mod, Step
from flowerbed.client.trainer import round_batches, round_steps
from flowerbed.sims.models import batchnorm_keys
from flowerbed.strategies.baselines.client import keep_batchnorm
from flowerbed.strategies.contract import ClientHalf
from flowerbed.strategies.fraug.nets import GENERATOR, RTNet, entropy, generator_for, mmd, nonsaturating_ce
from flowerbed.strategies.fraug.params import FRAugParams

#: What a client keeps in ``Context.state``: its RTNet, its prototypes (and which classes
#: they have seen), and its generator's BatchNorm layers when those stay local.
RTNET, PROTOTYPES, GENERATOR_BN = "fraug-rtnet", "fraug-prototypes", "fraug-generator-bn"


def schedule(params: FRAugParams, server_round: int, rounds: int) -> tuple[float, float]:
    """(lambda_t, s_t) of round t = server_round - 1 of T = rounds: lambda_t =
    min(lambda_max, r_t) (or the fixed value), s_t = r_t with feature interpolation, else 1;
    r_t = exp(gamma (t - T))."""
    r = math.exp(params.gamma * (server_round - 1 - rounds))
    lam = params.lambda_fixed if params.lambda_fixed is not None else min(params.lambda_max, r)
    return lam, (r if params.feature_interpolation else 1.0)


def cyclic_labels(num_classes: int, size: int, offset: int) -> torch.Tensor:
    """The class list rotated by ``offset`` and tiled to ``size``: balanced labels."""
    return (torch.arange(size) + offset) % num_classes


class FRAugWork:
    """One client's FRAug state for one round: G, the RTNet, the prototypes, optimizers."""

    def __init__(self, job: Job, params: FRAugParams) -> None:
        self.job, self.p = job, params
        head: nn.Linear = job.model.head
        self.dim, self.num_classes = head.in_features, head.out_features
        device = head.weight.device
        state = job.context.state.array_records
        self.generator = generator_for(params.latent_dim, self.num_classes, self.dim, job.scenario.seed).to(device)
        received = {k[len(GENERATOR):]: v for k, v in job.received.items() if k.startswith(GENERATOR)}
        if GENERATOR_BN in state:
            received.update(state[GENERATOR_BN].to_torch_state_dict())
        self.generator.load_state_dict(received, strict=False)
        with torch.random.fork_rng():
            torch.manual_seed(job.seed(0) + 3)  # the client's own initial RTNet
            self.rtnet = RTNet(self.dim, self.num_classes, params.latent_dim).to(device)
        self.prototypes = torch.zeros(self.num_classes, self.dim, device=device)
        self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
        if RTNET in state:
            self.rtnet.load_state_dict(state[RTNET].to_torch_state_dict())
            stored = state[PROTOTYPES].to_torch_state_dict()
            self.prototypes, self.seen = stored["mean"].to(device), stored["seen"].to(device)
        momentum = job.settings.momentum
        self.opt_g = torch.optim.SGD(self.generator.parameters(), lr=params.lr_g, momentum=momentum)
        self.opt_rt = torch.optim.SGD(self.rtnet.parameters(), lr=params.lr_rt, momentum=momentum)
        self.noise_source = torch.Generator().manual_seed(job.seed() + 7)  # apart from the batch order

    def noise(self, size: int) -> torch.Tensor:
        draw = torch.randn if self.p.noise == "normal" else torch.rand
        return draw(size, self.p.latent_dim, generator=self.noise_source).to(self.prototypes.device)

    def update_prototypes(self, u: torch.Tensor, y: torch.Tensor) -> None:
        m = self.p.prototype_momentum
        for c in y.unique():
            self.prototypes[c] = (1 - m) * self.prototypes[c] + m * u[y == c].mean(dim=0)
            self.seen[c] = True

    def synthetic(self, u: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, scale: float):
        """(u~_c, y~) around the prototypes and u~ around the real embeddings; classes whose
        prototype was never updated are left out of the first (``mask_unseen``)."""
        v_c, v = self.generator(self.noise(len(labels)), labels), self.generator(self.noise(len(y)), y)
        if self.p.use_rtnet:
            around_prototypes = self.prototypes[labels] + scale * self.rtnet(v_c, labels)
            around_samples = u + scale * self.rtnet(v, y)
        else:  # "G only": the generator's embeddings themselves
            around_prototypes, around_samples = v_c, v
        keep = self.seen[labels] if self.p.prototype_warmup == "mask_unseen" else torch.ones_like(labels, dtype=bool)
        return around_prototypes[keep], labels[keep], around_samples

    def distance(self, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mmd(a, b) if kind == "mmd" else F.mse_loss(a, b)

    def step_generator(self, u: torch.Tensor, labels: torch.Tensor) -> None:
        head = self.job.model.head
        self.generator.train()
        v = self.generator(self.noise(len(labels)), labels)
        anchor = self.prototypes[labels] if self.p.d_g == "l2_prototype" else u
        kind = "mse" if self.p.d_g == "l2_prototype" else "mmd"
        loss = F.cross_entropy(head(v), labels) - self.p.lambda_g * self.distance(kind, v, anchor)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

    def step_rtnet(self, u: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
        head = self.job.model.head
        self.generator.eval()
        self.rtnet.train()
        with torch.no_grad():
            v_c, v = self.generator(self.noise(len(labels)), labels), self.generator(self.noise(len(y)), y)
        around_prototypes = self.prototypes[labels] + scale * self.rtnet(v_c, labels)
        around_samples = u + scale * self.rtnet(v, y)
        if self.p.rt_loss == "neg_entropy":  # adversarial: hard samples for the head
            adversarial = -0.5 * (entropy(head(around_prototypes)) + entropy(head(around_samples)))
        else:
            adversarial = 0.5 * (nonsaturating_ce(head(around_prototypes), labels)
                                 + nonsaturating_ce(head(around_samples), y))
        close = 0.5 * (self.distance(self.p.d_rt, around_prototypes, self.prototypes[labels])
                       + self.distance(self.p.d_rt, around_samples, u))
        loss = adversarial + self.p.lambda_rt * close
        self.opt_rt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_rt.step()

    @torch.no_grad()
    def diagnostics(self, scale: float) -> dict[str, float]:
        """What the classifier is shown, scored by the client's head after the round (BN in
        eval mode): G's own embeddings for 256 balanced labels (accuracy, and the distance of
        each seen class's generated mean to its prototype); with the RTNet, the augmented
        embeddings around the prototypes (u~_c) and around the client's training embeddings
        (u~), and how far the RTNet moves an embedding, ||s_t phi|| / ||u||."""
        head, model = self.job.model.head, self.job.model
        model.eval()
        self.generator.eval()
        self.rtnet.eval()
        labels = cyclic_labels(self.num_classes, 256, 0).to(self.prototypes.device)
        v = self.generator(self.noise(len(labels)), labels)
        seen = [c for c in range(self.num_classes) if self.seen[c]]
        gaps = [float((v[labels == c].mean(0) - self.prototypes[c]).norm()) for c in seen]
        out = {"personalized_fraug_generated_accuracy": _accuracy(head(v), labels),
               "personalized_fraug_generated_to_prototype": sum(gaps) / max(len(gaps), 1)}
        if self.p.use_rtnet:
            x, y = self.job.data.x_train, self.job.data.y_train
            u = model.body(x)
            shift = scale * self.rtnet(self.generator(self.noise(len(y)), y), y)
            keep = self.seen[labels]
            around = self.prototypes[labels] + scale * self.rtnet(v, labels)
            out.update({"personalized_fraug_augmented_accuracy": _accuracy(head(u + shift), y),
                        "personalized_fraug_prototype_augmented_accuracy": _accuracy(head(around[keep]), labels[keep]),
                        "personalized_fraug_rtnet_shift": float(shift.norm(dim=1).mean() / u.norm(dim=1).mean())})
        return out

    def store(self) -> None:
        state = self.job.context.state
        state[RTNET] = ArrayRecord({k: v.detach().cpu().clone() for k, v in self.rtnet.state_dict().items()})
        state[PROTOTYPES] = ArrayRecord({"mean": self.prototypes.cpu().clone(), "seen": self.seen.cpu().clone()})
        local = set(batchnorm_keys(self.generator)) if self.p.generator_bn == "local" else set()
        weights = {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()}
        if local:
            state[GENERATOR_BN] = ArrayRecord({k: weights[k] for k in local})
        self.job.sent = {GENERATOR + k: v for k, v in weights.items() if k not in local}


def local_update(params: FRAugParams) -> Mod:
    """FRAug's round on a client: replaces the generic training step."""

    def mod(job: Job, call_next: Step) -> None:
        work = FRAugWork(job, params)
        model, head, s = job.model, job.model.head, job.settings
        lam, scale = schedule(params, job.server_round, job.scenario.rounds)
        optimizer = job.optimizer or job.new_optimizer()
        extra = job.extra_loss()
        x, y = job.data.x_train, job.data.y_train
        steps = round_steps(len(x), s)
        losses, batch = [], (job.server_round - 1) * steps  # the cyclic labels' running offset
        for xb, yb in round_batches(x, y, s, job.generator):
            labels = cyclic_labels(work.num_classes, len(yb), batch * s.batch_size).to(yb.device)
            batch += 1
            model.train()
            u = model.body(xb)
            loss = F.cross_entropy(head(u), yb)
            work.update_prototypes(u.detach(), yb)
            if lam > 0 and len(yb) > 1:
                work.generator.eval()
                work.rtnet.eval()
                with torch.no_grad():
                    u_c, y_c, u_s = work.synthetic(u.detach(), yb, labels, scale)
                synthetic = F.cross_entropy(head(u_s), yb)
                if len(y_c):
                    synthetic = 0.5 * (synthetic + F.cross_entropy(head(u_c), y_c))
                loss = (1 - lam) * loss + lam * synthetic
            total = loss + extra(model) if extra else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            losses.append(float(total.detach()))
            if len(yb) > 1:  # BatchNorm in G and the RTNet needs two samples
                work.step_generator(u.detach(), labels)
                if params.use_rtnet:
                    work.step_rtnet(u.detach(), yb, labels, scale)
        job.loss = sum(losses) / max(len(losses), 1)
        job.metrics.update({"fraug_lambda": lam, **work.diagnostics(scale)})
        work.store()

    return mod


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


class FRAugClient(ClientHalf):
    name = "fraug"
    params_type = FRAugParams

    def train_mods(self, params: FRAugParams, job: Job) -> list[Mod]:
        return [keep_batchnorm(), local_update(params)]

    def evaluate_mods(self, params: FRAugParams, job: Job) -> list[Mod]:
        return [keep_batchnorm(store=False)]
