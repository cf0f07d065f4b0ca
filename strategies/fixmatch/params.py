"""FixMatch's options (the ``[strategy.fixmatch]`` table), which FedLabel's extend."""

from __future__ import annotations

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FixMatchParams(StrategyParams):
    """A round = the client's labelled data (``client.local_epochs`` passes, the weak view),
    then ``unlabeled_steps`` steps on its unlabelled data: hard pseudo-labels from the weak
    view where the teacher's confidence reaches ``beta``, cross-entropy on the strong view.
    Defaults: FixMatch's beta = 0.95; equal step counts for the two phases ([RE-A])."""

    # Pseudo-label threshold on the teacher's confidence (above 1: no pseudo-label, which
    # is labelled-only training exactly: a unit check).
    beta: float = Field(default=0.95, gt=0)
    unlabeled_batch_size: int = Field(default=64, ge=1)
    # Unlabelled steps per round; None: one pass over the client's unlabelled samples.
    unlabeled_steps: int | None = Field(default=None, ge=1)
    # FedProx's mu on both phases (FedProx + FixMatch); 0: FedAvg + FixMatch.
    proximal_mu: float = Field(default=0.0, ge=0)
