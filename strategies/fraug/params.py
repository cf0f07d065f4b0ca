"""FRAug's options (the ``[strategy.fraug]`` table). Paper-vs-code differences (spec
fraug.md §7) are options; each default is named with its reason."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FRAugParams(StrategyParams):
    """Defaults: the spec's Digits settings (scenario R1); R2 and R3 set theirs in their files."""

    # Generator loss: CE(h(G(z, y)), y) - lambda_g * D_G(G(z, y), anchor); D_G = MSE to the
    # class prototypes (Digits) or Gaussian multi-kernel MMD to the real batch embeddings.
    d_g: Literal["l2_prototype", "mmd"] = "l2_prototype"
    lambda_g: float = Field(default=1.0, ge=0)
    # RTNet loss: -entropy of the head on its outputs (adversarial: the code's) or the code's
    # alternative non-saturating CE; plus lambda_rt * D_RT to the real anchors.
    rt_loss: Literal["neg_entropy", "nonsat_ce"] = "neg_entropy"
    d_rt: Literal["mmd", "mse"] = "mmd"
    lambda_rt: float = Field(default=1.0, ge=0)
    # lambda_t = min(lambda_max, exp(gamma (t - T))): Digits gamma 0.002 is 0.5 from round 0.
    gamma: float = Field(default=0.002, ge=0)
    lambda_max: float = Field(default=0.5, ge=0, le=1)
    # A fixed lambda_t instead of the schedule (0: the classifier never sees synthetic
    # embeddings, which is FedBN exactly: the ablation and a unit check).
    lambda_fixed: float | None = Field(default=None, ge=0, le=1)
    # Scale the residual by r_t = exp(gamma (t - T)) (PACS / OfficeHome warm-up).
    feature_interpolation: bool = False
    use_rtnet: bool = True  # False: the "G only" ablation (synthetic = prototype / embedding + G's output unused)
    latent_dim: int = Field(default=64, ge=1)  # noise size of G, hidden size of the RTNet
    noise: Literal["normal", "uniform"] = "normal"  # paper N(0, I) / code U[0, 1)
    lr_g: float = Field(default=0.05, gt=0)
    lr_rt: float = Field(default=0.05, gt=0)
    prototype_momentum: float = Field(default=0.3, gt=0, le=1)  # EMA m of the class prototypes
    # "mask_unseen": classes whose prototype was never updated are left out of the prototype
    # branch (the spec's default); "none": the code's zero prototypes.
    prototype_warmup: Literal["mask_unseen", "none"] = "mask_unseen"
    # G's BatchNorm layers stay on the client (the spec's safer default under feature shift) or
    # are averaged with G (the code's Digits / PACS setting).
    generator_bn: Literal["local", "shared"] = "local"
