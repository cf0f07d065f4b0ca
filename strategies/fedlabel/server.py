"""FedLabel's server half (Cho et al., ICCV 2023, arXiv 2307.08809; no official code;
spec ``shared/specs/fedlabel.md``): plain FedAvg, every parameter averaged (FedLabel is
not a personalized method), pooling the clients' pseudo-label counts into the round's
rates, among them how often the local teacher won (``local_win_rate``)."""

from __future__ import annotations

from flowerbed.strategies.fixmatch.server import FixMatch


class FedLabel(FixMatch):
    name = "fedlabel"
