"""Semi-supervised local training shared by FixMatch and FedLabel (spec fedlabel.md §2.2).

An unlabelled batch u (B, *input_shape) is seen twice: a weak view alpha(u) that a
teacher labels without gradient, and a strong view A(u) that the student trains on::

    L_PL   = 1/B sum_u m(u) CE(f(A(u); w), y^(u))
    L_cons = 1/B sum_u c(u) KL(q~(u) || softmax(f(A(u); w)))

with m(u) in {0, 1} the confidence mask, y^ the hard pseudo-label, and, for FedLabel
only, c(u) >= 0 the consistency weight and q~ (B, C) the consistency target. Both
normalise by the full batch B (FixMatch's convention: no spikes when few samples pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from flowerbed.client.augment import strong, weak
from flowerbed.client.trainer import TrainSettings


@dataclass
class PseudoLabels:
    """A teacher's verdict on a weak batch of B samples: ``labels`` (B,) int64, ``mask``
    (B,) bool; FedLabel adds ``target`` (B, C) and ``weight`` (B,) for the consistency
    term, and what the diagnostics count: ``local_wins`` (B,) bool and each teacher's
    argmax ``local`` / ``global_`` (B,)."""

    labels: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    local_wins: torch.Tensor | None = None
    local: torch.Tensor | None = None
    global_: torch.Tensor | None = None


#: weak view (B, *input_shape) -> the teacher's pseudo-labels.
Teacher = Callable[[torch.Tensor], PseudoLabels]


def unlabelled_loss(logits: torch.Tensor, found: PseudoLabels) -> torch.Tensor:
    """L_PL + L_cons of the student's ``logits`` (B, C) on the strong view."""
    n = len(logits)
    loss = (found.mask * F.cross_entropy(logits, found.labels, reduction="none")).sum() / n
    if found.target is not None:
        kl = F.kl_div(F.log_softmax(logits, dim=1), found.target, reduction="none").sum(dim=1)
        loss = loss + (found.weight * kl).sum() / n
    return loss


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax(f(x)) (B, C) of a teacher: eval mode, no gradient; the mode is restored."""
    was_training = model.training
    model.eval()
    out = F.softmax(model(x), dim=1)
    model.train(was_training)
    return out


def self_teacher(model: nn.Module, beta: float) -> Teacher:
    """FixMatch: the student labels its own weak view; confident where max-prob >= beta."""

    def teach(view: torch.Tensor) -> PseudoLabels:
        confidence, labels = probabilities(model, view).max(dim=1)
        return PseudoLabels(labels, confidence >= beta)

    return teach


def unlabelled_batches(num: int, batch_size: int, steps: int | None,
                       generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices of ``steps`` batches (default: one pass), through fresh permutations
    of the ``num`` unlabelled rows drawn by ``generator``."""
    steps = math.ceil(num / batch_size) if steps is None else steps
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps if num else 0):
        if len(order) < min(batch_size, num):
            order = torch.cat([order, torch.randperm(num, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def views(x: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(weak, strong) views of an unlabelled batch; the weak one is the labelled data's."""
    return (weak(x, generator, settings.translate_pixels, settings.hflip),
            strong(x, generator, settings.hflip))


@dataclass
class Tally:
    """What the teachers said, per unlabelled row seen (concatenated over steps)."""

    rows: list[torch.Tensor] = field(default_factory=list)
    found: list[PseudoLabels] = field(default_factory=list)

    def add(self, rows: torch.Tensor, found: PseudoLabels) -> None:
        self.rows.append(rows.cpu())
        self.found.append(found)

    def counts(self, truth: torch.Tensor) -> dict[str, int]:
        """Counts against the hidden true labels ``truth`` (u,) of the unlabelled rows: for
        analysis after training, never for training. Keys: seen, masked, correct (masked
        and right); with two teachers, local-wins, local-correct, global-correct, agree."""
        if not self.rows:
            return {"pseudo-seen": 0, "pseudo-masked": 0, "pseudo-correct": 0}
        y = truth[torch.cat(self.rows)]
        cat = {name: torch.cat([getattr(f, name).cpu() for f in self.found])
               for name in ("labels", "mask", "local_wins", "local", "global_") if getattr(self.found[0], name) is not None}
        out = {"pseudo-seen": len(y), "pseudo-masked": int(cat["mask"].sum()),
               "pseudo-correct": int((cat["mask"] & (cat["labels"] == y)).sum())}
        if "local_wins" in cat:
            out.update({"pseudo-local-wins": int(cat["local_wins"].sum()),
                        "pseudo-local-correct": int((cat["local"] == y).sum()),
                        "pseudo-global-correct": int((cat["global_"] == y).sum()),
                        "pseudo-agree": int((cat["local"] == cat["global_"]).sum())})
        return out
