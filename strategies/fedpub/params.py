"""FED-PUB's options (the ``[strategy.fedpub]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedPubParams(StrategyParams):
    """The ``[strategy.fedpub]`` parameters of FED-PUB (defaults: spec §3 and §7, but for
    the mask L1's form, chosen by measurement).

    The mask sparsity term lambda1 * sum_l ||M_l||_1 acts in one of two forms:

    * ``"decoupled"`` (the default): after every optimizer step, a soft-threshold
      M <- sign(M) * max(|M| - lr * lambda1, 0), the proximal step of the same objective
      (as AdamW decouples weight decay from Adam's moments). Adam sees only the
      cross-entropy, so each client's masks follow its own data; entries without a
      cross-entropy signal decay by lr * lambda1 a step and are pruned. lambda1 = 0.375
      at lr 0.01 and one step a round (Cora disjoint-10, 100 rounds, 3 seeds,
      ``bench/fedpub_results.py``): 48% of mask entries pruned at the end, alpha and the
      similarities as without L1, accuracy 81.9 ± 0.5 against 81.8 ± 0.4 for the code's
      no-op; 0.25 prunes almost nothing in 100 steps, 0.5 prunes 58% at 80.5 ± 0.6, 1.0
      prunes 82% and loses 6 points.
    * ``"loss"`` (the paper, literally): the term joins the loss. Adam divides every
      gradient by its own running scale, so wherever |dCE/dM| << lambda1 the step is
      lr * sign(M) whatever lambda1 is: the masks of all clients follow the same path
      1 - lr * t (``test_l1_in_the_loss_moves_silent_masks_by_lr_whatever_lambda1_is``),
      their functional embeddings become alike (mean similarity 0.95), alpha uniform,
      and FED-PUB falls to FedAvg's accuracy (66.0 ± 2.0% on Cora disjoint-10, lambda1 1e-3;
      ``test_default_mask_l1_keeps_the_masks_personal_on_cora`` checks the default).
    """

    # Sharpness of the similarity weights; official Cora scripts: 3 (disjoint 10) and 5 (overlap 30).
    tau: float = Field(default=10.0, ge=0)
    agg_norm: Literal["exp", "cosine"] = "exp"
    # Weights of the global model: training nodes (paper reading) or uniform (official code).
    global_weighting: Literal["num_train_nodes", "uniform"] = "num_train_nodes"
    # "paper": the mask L1 and the proximal term act on training; "code_noop": as the
    # official code, computed on detached tensors, so they do nothing.
    regularizers: Literal["paper", "code_noop"] = "paper"
    mask_l1_form: Literal["decoupled", "loss"] = "decoupled"
    # lambda1; the same objective in both forms, but "loss" under Adam ignores its size
    # (see above), while "decoupled" prunes an idle entry after 1 / (lr * lambda1) steps
    # (267 at lr 0.01 and the default 0.375): scale it with 1 / (lr * steps of a run). The paper's value: 1e-3.
    mask_l1: float = Field(default=0.375, ge=0)
    prox_l2: float = Field(default=1e-3, ge=0)  # lambda2
    # Eval-time pruning: mask entries with |M| below it are zeroed (in the official code it is
    # lambda1, 1e-3; a separate option here, so lambda1 can move without moving the pruning).
    prune_threshold: float = Field(default=1e-3, ge=0)
    # Seed of the random proxy graph all clients embed; None: the run's seed (the server
    # sends the resolved value).
    proxy_seed: int | None = None
