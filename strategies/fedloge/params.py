"""FedLoGe's options (the ``[strategy.fedloge]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedLoGeParams(StrategyParams):
    """The ``[strategy.fedloge]`` parameters of FedLoGe (defaults: spec §3 and §7)."""

    beta: float = Field(default=0.6, ge=0, lt=1)  # SSE-C sparsity
    etf_norm: float = Field(default=0.1, gt=0)  # target class-vector norm (a logit temperature)
    etf_steps: int = Field(default=10_000, ge=0)  # Adam refinement steps
    sse_c_bias: Literal["zero", "random_frozen"] = "zero"
    glafr_scale: float = Field(default=1.7, gt=0)
    # Personalized realignment: psi's unit directions (the paper's reading) or psi as it is (code).
    norm_transfer: Literal["unit", "code"] = "unit"
    # Test-time mask of the classes a client has no training sample of (code) or none.
    pm_mask: Literal["none", "train_count_rule"] = "none"
    # Seed the SSE-C is built from, identically on the server and every client; None: the
    # run's seed (the server sends the resolved value).
    etf_seed: int | None = None
