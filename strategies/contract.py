"""The contract between a strategy's two halves and the platform.

A strategy is one folder of :mod:`flowerbed.strategies`:

* ``params.py``: a :class:`StrategyParams` model, the only place its options and
  defaults are written. The server half sends it to clients inside every message's
  ``config`` under one namespaced key (:func:`params_key`), as JSON; the client half
  decodes it with the same class (:meth:`StrategyParams.from_config`). No other key.
* ``server.py``: a Flower ``Strategy`` (a subclass of Flower's ``FedAvg`` or a wrapper
  around another strategy, like Flower's DP wrappers). Whatever the platform reads from
  it besides Flower's API is declared in :class:`ServerHooks`.
* ``client.py``: a :class:`ClientHalf`, the mods (see :mod:`flowerbed.client.mods`) it
  puts around the generic local training and scoring, and any ``query`` actions of its own.
* pure maths that both halves share, in its own module.

Flower's own strategies keep Flower's protocol: FedProx's client half reads Flower's
``proximal-mu`` key, so a client written like Flower's examples joins those runs too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from flwr.app import ConfigRecord
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import nn

    from flowerbed.client.mods import Job, Mod

#: Every strategy's parameters travel under ``flowerbed.<name>`` in a message's config.
PARAMS_NAMESPACE = "flowerbed"

P = TypeVar("P", bound="StrategyParams")


def params_key(name: str) -> str:
    return f"{PARAMS_NAMESPACE}.{name}"


class StrategyParams(BaseModel):
    """Base of every strategy's parameters model: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no bool for a number

    def to_config(self, name: str) -> ConfigRecord:
        """The one config entry that carries these parameters to the client half."""
        return ConfigRecord({params_key(name): self.model_dump_json()})

    @classmethod
    def from_config(cls: type[P], config: ConfigRecord, name: str) -> P | None:
        """The parameters a message carries for strategy ``name``, or None if none."""
        text = config.get(params_key(name))
        return None if text is None else cls.model_validate_json(str(text))

    def non_defaults(self) -> dict[str, Any]:
        """The options set away from their defaults (they name a run's method)."""
        return {k: v for k, v in self.model_dump().items()
                if v != type(self).model_fields[k].get_default(call_default_factory=True)}


class NoParams(StrategyParams):
    """A strategy without options of its own."""


@runtime_checkable
class ServerHooks(Protocol):
    """What the ServerApp calls on a strategy besides Flower's ``Strategy`` API.

    * ``evaluation_variants(model)``: other generic models to score on the test set,
      built from the global ``model`` (FedLoGe's SSE-C and realigned heads), by name;
    * ``round_report()``: after a round, metrics to log and a JSON artifact (FED-PUB's
      similarity matrix), each possibly empty;
    * ``setup_report()``: metrics of a setup phase run before round 1 (GGEUR's
      geometry exchange), logged at round 0;
    * ``state(partition_of)`` / ``load_state(state, node_of)``: what the strategy
      carries from one round to the next (FED-PUB's personalized models), for a
      checkpoint (tensors, arrays and plain values); per-node state keyed by partition
      id (``partition_of(node_id)``), as node ids change when a run resumes
      (``node_of(partition_id)``). A setup phase is run again on resume, not saved.
    """

    def evaluation_variants(self, model: nn.Module) -> dict[str, nn.Module]: ...

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]: ...

    def setup_report(self) -> dict[str, float]: ...

    def state(self, partition_of: Callable[[int], int]) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any], node_of: Callable[[int], int]) -> None: ...


class DefaultHooks:
    """:class:`ServerHooks` that report nothing and keep no state between rounds: the
    base of flowerbed's strategies, and what a strategy without hooks (Flower's own
    FedAvg and FedProx, which keep none) is seen as."""

    def evaluation_variants(self, model: nn.Module) -> dict[str, nn.Module]:
        return {}

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        return {}, {}

    def setup_report(self) -> dict[str, float]:
        return {}

    def state(self, partition_of: Callable[[int], int]) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], node_of: Callable[[int], int]) -> None:
        pass


def hooks_of(strategy: object) -> ServerHooks:
    """``strategy`` itself if it implements :class:`ServerHooks`, else hooks that report nothing."""
    return strategy if isinstance(strategy, ServerHooks) else DefaultHooks()


#: A ``query.<action>`` handler of a client half: (message, context, job) -> reply content.
QueryHandler = Callable[..., Any]


class ClientHalf:
    """The client half of a strategy: mods around the generic training and scoring.

    ``key`` is the config key whose presence in a message selects this half (by
    default :func:`params_key` of ``name``); :meth:`params` decodes what it carries.
    The ClientApp runs ``train_mods`` (outermost first) around its local training
    and ``evaluate_mods`` around its scoring; a mod may replace the step it wraps by
    not calling on (FedLoGe trains three heads its own way).
    """

    name: ClassVar[str]
    params_type: ClassVar[type[StrategyParams]] = NoParams

    @property
    def key(self) -> str:
        return params_key(self.name)

    def params(self, config: ConfigRecord) -> StrategyParams:
        found = self.params_type.from_config(config, self.name)
        assert found is not None, f"{self.key} missing from the config"
        return found

    def train_mods(self, params: Any, job: Job) -> list[Mod]:
        return []

    def evaluate_mods(self, params: Any, job: Job) -> list[Mod]:
        return []

    def queries(self) -> dict[str, QueryHandler]:
        """``query.<action>`` handlers: action -> handler(message, context, job)."""
        return {}
