"""FED-PUB's options (the ``[strategy.fedpub]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedPubParams(StrategyParams):
    """The ``[strategy.fedpub]`` parameters of FED-PUB (defaults: spec §3 and §7).

    The mask sparsity term lambda1 * sum_l ||M_l||_1 acts in one of two forms:

    * ``"decoupled"``: after every optimizer step, a soft-threshold
      M <- sign(M) * max(|M| - lr * lambda1, 0), the proximal step of the same objective
      (as AdamW decouples weight decay from Adam's moments). Adam sees only the
      cross-entropy, so each client's masks follow its own data; entries without a
      cross-entropy signal (features a client never sees) decay to zero and are pruned.
    * ``"loss"`` (the paper, literally; the default until a lambda1 sweep picks one): the
      term joins the loss. Adam divides every gradient by its own running scale, so
      wherever |dCE/dM| << lambda1 the step is lr * sign(M) whatever lambda1 is: the
      masks of all clients follow the same path 1 - lr * t (the test
      ``test_l1_in_the_loss_moves_silent_masks_by_lr_whatever_lambda1_is``), which makes
      their functional embeddings alike and the similarity weights uniform.
    """

    # Sharpness of the similarity weights; official Cora scripts: 3 (disjoint 10) and 5 (overlap 30).
    tau: float = Field(default=10.0, ge=0)
    agg_norm: Literal["exp", "cosine"] = "exp"
    # Weights of the global model: training nodes (paper reading) or uniform (official code).
    global_weighting: Literal["num_train_nodes", "uniform"] = "num_train_nodes"
    # "paper": the mask L1 and the proximal term act on training; "code_noop": as the
    # official code, computed on detached tensors, so they do nothing.
    regularizers: Literal["paper", "code_noop"] = "paper"
    mask_l1_form: Literal["decoupled", "loss"] = "loss"
    # lambda1; the same objective in both forms, but "loss" under Adam ignores its size
    # (see above), while "decoupled" needs lambda1 near 1 / (lr * steps) to prune at all.
    mask_l1: float = Field(default=1e-3, ge=0)
    prox_l2: float = Field(default=1e-3, ge=0)  # lambda2
    # Eval-time pruning: mask entries with |M| below it are zeroed (in the official code it is
    # lambda1, 1e-3; a separate option here, so lambda1 can move without moving the pruning).
    prune_threshold: float = Field(default=1e-3, ge=0)
    # Seed of the random proxy graph all clients embed; None: the run's seed (the server
    # sends the resolved value).
    proxy_seed: int | None = None
