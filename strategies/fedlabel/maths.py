"""FedLabel's per-sample teacher choice (spec fedlabel.md §2.2, §2.4).

For a weak batch with the local teacher's q_L and the global teacher's q_G (B, C)::

    s_L = h(q_L), s_G = h(q_G)            h: confidence on [0, 1]
    e = L if s_L >= s_G else G            (ties: local, [RE-B]); o = the other one
    y^ = argmax q_e,  m = 1[s_e >= beta]
    c = m * 1[argmax q_L = argmax q_G] * lambda(u),   lambda(u) = lambda0 s_o / s_e  (or lambda0)
    q~ = q_o (or q_e)

so the student takes the hard label of the more confident teacher and, where both
agree, the other teacher's soft distribution (:func:`..fixmatch.maths.unlabelled_loss`).
"""

from __future__ import annotations

import math

import torch

from flowerbed.strategies.fedlabel.params import FedLabelParams
from flowerbed.strategies.fixmatch.maths import PseudoLabels


def confidence(q: torch.Tensor, kind: str) -> torch.Tensor:
    """h(q) (B,) in [0, 1] of probabilities q (B, C); 1 for a one-hot vector."""
    num_classes = q.shape[1]
    if kind == "max_prob":
        return q.max(dim=1).values
    if kind == "variance":  # the variance of a one-hot vector is (C - 1) / C^2
        return q.var(dim=1, unbiased=False) * num_classes ** 2 / (num_classes - 1)
    if kind == "neg_entropy":
        return 1 + (q * q.clamp_min(1e-12).log()).sum(dim=1) / math.log(num_classes)
    raise ValueError(kind)


def select(q_local: torch.Tensor, q_global: torch.Tensor, params: FedLabelParams) -> PseudoLabels:
    """The pseudo-labels, mask and consistency target and weight of one weak batch."""
    s_local, s_global = confidence(q_local, params.confidence), confidence(q_global, params.confidence)
    if params.teachers == "select":
        local_wins = s_local >= s_global
    else:
        local_wins = torch.full_like(s_local, params.teachers == "local", dtype=torch.bool)
    pick = local_wins[:, None]
    q_sel, q_other = torch.where(pick, q_local, q_global), torch.where(pick, q_global, q_local)
    s_sel, s_other = torch.where(local_wins, s_local, s_global), torch.where(local_wins, s_global, s_local)
    labels, mask = q_sel.argmax(dim=1), s_sel >= params.beta
    local, global_ = q_local.argmax(dim=1), q_global.argmax(dim=1)
    found = PseudoLabels(labels, mask, local_wins=local_wins, local=local, global_=global_)
    if params.consistency:
        scale = s_other / s_sel.clamp_min(1e-12) if params.consistency_weight == "ratio" else torch.ones_like(s_sel)
        found.weight = mask * (local == global_) * params.lambda0 * scale.clamp(max=1.0)
        found.target = q_other if params.consistency_target == "other" else q_sel
    return found
