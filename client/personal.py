"""What a client keeps between rounds in Flower's ``Context.state``.

Personalized strategies name, in the train config, the parameters a client keeps
instead of taking the server's (``local-keys``: comma-separated name fragments,
``*`` for all; e.g. ``head`` for FedPer, ``mask`` for FED-PUB), and whether its
optimizer state persists (``keep-optimizer``). The client never uploads its local
parameters.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from torch import nn

from flowerbed.client.trainer import matches

LOCAL_PARAMS = "local-params"
OPTIMIZER_STATE = "optimizer-state"


def name_patterns(config: ConfigRecord, key: str = "local-keys") -> tuple[str, ...]:
    """The comma-separated name fragments under ``key`` of a config (``local-keys``,
    ``freeze-keys``, ``finetune-keys``)."""
    return tuple(p.strip() for p in str(config.get(key, "")).split(",") if p.strip())


def compose_state(initial: dict[str, torch.Tensor], received: dict[str, torch.Tensor],
                  context: Context, patterns: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The client's model: its fresh initial weights, overwritten by the server's, then
    by its own stored local parameters. A client that has stored nothing yet starts its
    local parameters from the initial weights (never from another client's)."""
    return {**initial, **received, **local_state(context)}


def local_state(context: Context) -> dict[str, torch.Tensor]:
    if LOCAL_PARAMS not in context.state.array_records:
        return {}
    return context.state.array_records[LOCAL_PARAMS].to_torch_state_dict()


def store_local(model: nn.Module, context: Context, patterns: tuple[str, ...]) -> None:
    if patterns:
        kept = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if matches(k, patterns)}
        context.state[LOCAL_PARAMS] = ArrayRecord(kept)


def shared_state(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """What the client uploads: every parameter but its local ones."""
    return {k: v for k, v in model.state_dict().items() if not matches(k, patterns)}


def restore_optimizer(optimizer: torch.optim.Optimizer, context: Context) -> None:
    """Reload the per-parameter optimizer state (e.g. Adam's moments) kept last round."""
    if OPTIMIZER_STATE not in context.state.array_records:
        return
    tensors = context.state.array_records[OPTIMIZER_STATE].to_torch_state_dict()
    saved = optimizer.state_dict()
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    saved["state"] = per_param
    optimizer.load_state_dict(saved)


def store_optimizer(optimizer: torch.optim.Optimizer, context: Context) -> None:
    tensors = {f"{index}.{name}": (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu()
               for index, entry in optimizer.state_dict()["state"].items() for name, value in entry.items()}
    context.state[OPTIMIZER_STATE] = ArrayRecord(tensors)
