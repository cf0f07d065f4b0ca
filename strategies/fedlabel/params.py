"""FedLabel's options (the ``[strategy.fedlabel]`` table). There is no official code: each
reading difference of spec fedlabel.md §7 is an option, each default named with its reason."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.fixmatch.params import FixMatchParams


class FedLabelParams(FixMatchParams):
    """FixMatch's round with two teachers: the global model received this round and the
    client's local model; per unlabelled sample the more confident one labels it."""

    # Who labels: the more confident teacher per sample (FedLabel), or always the local
    # or always the global one (ablations; the consistency term still uses the other one).
    teachers: Literal["select", "local", "global"] = "select"
    # The local teacher: the model fitted to this round's labelled data (§8.1: "the local
    # model trained on the labelled data", frozen after the labelled phase), or the client's
    # own model as it ended its previous round (kept in its state; this round's fit on a
    # client's first round).
    local_teacher: Literal["this_round", "previous_round"] = "this_round"
    # Confidence h, on [0, 1] so that beta means the same: max-prob (beta = 0.95 is
    # calibrated on it), the softmax variance over a one-hot's, 1 - entropy / log C.
    confidence: Literal["max_prob", "variance", "neg_entropy"] = "max_prob"
    # The consistency term on confident samples where both teachers agree (False: ablation).
    consistency: bool = True
    lambda0: float = Field(default=1.0, ge=0)  # its bound (eq. 7)
    # Its weight: lambda0 * s_other / s_selected (bounded by lambda0: [RE-B]) or lambda0.
    consistency_weight: Literal["ratio", "constant"] = "ratio"
    # Its target: the other teacher's distribution (the hard label already comes from the
    # selected one) or the selected teacher's.
    consistency_target: Literal["other", "selected"] = "other"
    # "two_phase": labelled passes, then unlabelled steps ([RE-A]; the abstract's reading).
    # "single_loop" ([RE-B], an ablation): each unlabelled step also takes a labelled batch,
    # L = CE_labelled + lambda_u (L_PL + L_cons), and the local teacher is the live student.
    schedule: Literal["two_phase", "single_loop"] = "two_phase"
    lambda_u: float = Field(default=1.0, ge=0)  # single_loop's unlabelled weight
