"""Scenario files: the schema, loading, ``--set`` overrides and the Flower run-config form.

A scenario is a TOML file::

    seed = 0
    rounds = 10
    [dataset]    name = "digits"
    [partition]  kind = "dirichlet", num_clients = 10, alpha = 0.3
    [model]      name = "mlp"
    [strategy]   name = "fedpub"            # [strategy.fedpub] its parameters
    [client]     local_epochs, batch_size, lr, optimizer, translate_pixels, num_cpus, num_gpus
    [sampling]   fraction_train, fraction_evaluate, min_clients
    [checkpoint] every, dir
    [mlflow]     experiment, tracking_uri

Everything is validated before any worker starts; :class:`ConfigError` carries a
one-line message that names the bad key and, where there is a closed set, the
allowed values.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowerbed.sims.datasets import DATASET_DOMAINS, GRAPH_DATASETS, IMAGE_DATASETS, DatasetConfig
from flowerbed.sims.base import GRAPH_MODELS, MODEL_NAMES
from flowerbed.sims.partitions import DOMAIN_KINDS, GRAPH_KINDS, PARTITION_KINDS, PartitionConfig

#: Run-config keys that carry a whole scenario, and overrides on top of it.
RUN_CONFIG_SCENARIO, RUN_CONFIG_OVERRIDES = "scenario", "overrides"


class ConfigError(ValueError):
    """A scenario that cannot run; ``str(err)`` is a one-line message naming the key."""


class _Section(BaseModel):
    # Strict: `rounds = true` or `lr = "0.1"` is an error, not 1 or 0.1 (an int is a float).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConfig(_Section):
    name: Literal[MODEL_NAMES]  # type: ignore[valid-type]
    hidden: int = Field(default=64, ge=1, le=65536)


class StrategyConfig(BaseModel):
    """``name``, the add-ons wrapped around it (``addons = ["ggeur"]``, or the short
    ``name = "fedavg+ggeur"``), and parameter tables keyed by strategy name
    (``[strategy.fedpub] tau = 3.0``). A file may carry tables for several strategies;
    only those of ``name`` and ``addons`` are used.

    The scenario layer knows no strategy: names and tables are checked where the apps
    are built (:func:`flowerbed.strategies.resolve_strategy`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    addons: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _split_names(cls, tree: Any) -> Any:
        """``fedavg+ggeur`` -> name ``fedavg``, add-on ``ggeur``; add-ons may come as the
        comma-joined string of Flower's flat run config."""
        if not isinstance(tree, dict):
            return tree
        tree = dict(tree)
        addons = tree.get("addons", ())
        if isinstance(addons, str):
            addons = [a.strip() for a in addons.split(",") if a.strip()]
        name = tree.get("name")
        if isinstance(name, str) and "+" in name:
            name, *more = [part.strip() for part in name.split("+")]
            tree["name"] = name
            addons = [*more, *(a for a in addons if a not in more)]
        tree["addons"] = tuple(addons)
        return tree

    def table(self, name: str) -> dict[str, Any]:
        """The parameter table of strategy (or add-on) ``name``; empty if the file has none."""
        return dict((self.model_extra or {}).get(name) or {})

    @property
    def method(self) -> str:
        """``name`` with its add-ons, e.g. ``fedavg+ggeur``."""
        return "+".join((self.name, *self.addons))


class ClientConfig(_Section):
    local_epochs: int = Field(default=1, ge=1)
    # At most this many local steps a round (None: every batch of local_epochs); gives
    # methods of unequal passes the same step budget.
    max_local_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    # Shift each training image by up to this many pixels, zero-filled (RandomCrop with
    # padding), every method alike; image datasets only. 0: no augmentation.
    translate_pixels: int = Field(default=0, ge=0, le=8)
    # And flip it left-right with probability 1/2 first (for classes a mirror keeps:
    # clothes, not digits).
    hflip: bool = False
    # Keep each client's optimizer state (e.g. Adam's moments) across rounds instead of
    # a fresh optimizer every round (FED-PUB's code does this for every method).
    keep_optimizer: bool = False
    # Ray resources per simulated client. One CPU each: Flower's default of two gives
    # a single worker, and no parallelism, on a 2-core machine.
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)


class SamplingConfig(_Section):
    fraction_train: float = Field(default=1.0, gt=0, le=1)  # 0 would train nobody
    fraction_evaluate: float = Field(default=1.0, ge=0, le=1)
    min_clients: int = Field(default=2, ge=1)
    # Evaluate (clients and the global test set) before round 1, every this many rounds
    # and at the last round; a round's training metrics are logged every round.
    evaluate_every: int = Field(default=1, ge=1)
    # A client's reply above this size (all its records, MiB) is rejected unaggregated.
    max_reply_mb: float = Field(default=1024.0, gt=0)
    # A round in which fewer than this fraction of the sampled clients returned a usable
    # update is not applied; this many such rounds in a row fail the run.
    min_success_fraction: float = Field(default=0.5, ge=0, le=1)
    max_skipped_rounds: int = Field(default=3, ge=1)
    # How long a round waits for replies before counting the missing ones failed.
    round_timeout_s: float = Field(default=3600.0, gt=0)
    # Nodes (deployment): a round starts once this many clients are connected (0: every
    # partition, `partition.num_clients`); fewer than that for `node_wait_s` seconds in a
    # row, at the start or between rounds, fails the run instead of waiting forever.
    min_available_clients: int = Field(default=0, ge=0)
    node_wait_s: float = Field(default=600.0, gt=0)

    def available_needed(self, num_clients: int) -> int:
        """The connected clients a round waits for."""
        return self.min_available_clients or num_clients

    def evaluates(self, server_round: int, rounds: int) -> bool:
        return server_round in (0, rounds) or server_round % self.evaluate_every == 0


class CheckpointConfig(_Section):
    # Write a checkpoint after every this many rounds (and the last); 0: none. A
    # simulation's run can then continue with `flowerbed run --resume RUN_ID`.
    every: int = Field(default=1, ge=0)
    # Where checkpoints go ("": a `checkpoints` folder beside the MLflow SQLite store,
    # else in the working directory); each run gets its own folder there, removed
    # when the run finishes.
    dir: str = ""


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` tracking URI, resolved; None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve() if tracking_uri.startswith("sqlite:///") else None


class MlflowConfig(_Section):
    experiment: str = Field(default="flowerbed", min_length=1, max_length=256)  # MLflow's column size
    tracking_uri: str = "sqlite:///mlflow.db"


class SimulationConfig(_Section):
    """How ``flowerbed run`` simulates (never what it computes: the metrics are the same
    either way). ``engine``: flowerbed's grid over a pool of Ray actors, or Flower's
    Simulation Engine (``run_simulation``). ``ray_address``: a running Ray cluster to
    attach to (``ray start --head`` prints it; "auto" finds a local one) instead of
    starting Ray here; None: ``$RAY_ADDRESS`` if set, else a new local Ray."""

    engine: Literal["actors", "flower"] = "actors"
    ray_address: str | None = Field(default=None, min_length=1)


class Scenario(_Section):
    """A whole, validated scenario."""

    # The scenario's name (its file's stem), tagged on every run it makes.
    name: str | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # numpy's and torch's seeds
    rounds: int = Field(ge=1)
    dataset: DatasetConfig
    partition: PartitionConfig
    model: ModelConfig
    strategy: StrategyConfig
    client: ClientConfig = ClientConfig()
    sampling: SamplingConfig = SamplingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    mlflow: MlflowConfig = MlflowConfig()
    # None (left out of the run's params) unless a scenario or --ray-address sets it.
    simulation: SimulationConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _domain_clients(cls, tree: Any) -> Any:
        """Domain partitions: ``num_clients`` defaults to domains x clients per domain."""
        if not isinstance(tree, dict):
            return tree
        partition, dataset = tree.get("partition"), tree.get("dataset")
        if (isinstance(partition, dict) and isinstance(dataset, dict)
                and partition.get("kind") in DOMAIN_KINDS and "num_clients" not in partition):
            domains = partition.get("domains") or DATASET_DOMAINS.get(dataset.get("name"), ())
            if isinstance(domains, str):
                domains = domains.split(",")
            per_domain = partition.get("clients_per_domain", 1)
            # A bad clients_per_domain or a dataset without domains is reported by its
            # own check; the count here only keeps `num_clients` from masking it.
            per_domain = per_domain if isinstance(per_domain, int) and per_domain >= 1 else 1
            tree = {**tree, "partition": {**partition, "num_clients": max(len(domains), 1) * per_domain}}
        return tree

    @model_validator(mode="after")
    def _check_cross_keys(self) -> "Scenario":
        name, kind = self.dataset.name, self.partition.kind
        if kind in DOMAIN_KINDS and name not in DATASET_DOMAINS:
            raise ValueError(f"partition.kind={kind!r} needs a multi-domain dataset; "
                             f"allowed: {', '.join(DATASET_DOMAINS)}")
        if (kind in GRAPH_KINDS) != (name in GRAPH_DATASETS):
            raise ValueError(f"partition.kind={kind!r} does not fit dataset.name={name!r}: "
                             f"graphs ({', '.join(GRAPH_DATASETS)}) take {' or '.join(GRAPH_KINDS)}")
        if (self.model.name in GRAPH_MODELS) != (name in GRAPH_DATASETS):
            raise ValueError(f"model.name={self.model.name!r} does not fit dataset.name={name!r}: "
                             f"graphs take {', '.join(GRAPH_MODELS)}, array data the others")
        for key in ("translate_pixels", "hflip"):
            if getattr(self.client, key) and name not in IMAGE_DATASETS:
                raise ValueError(f"client.{key}={getattr(self.client, key)} needs an image dataset "
                                 f"({', '.join(IMAGE_DATASETS)}); dataset.name={name!r} is not one")
        for key in ("min_clients", "min_available_clients"):
            if getattr(self.sampling, key) > self.partition.num_clients:
                raise ValueError(f"sampling.{key}={getattr(self.sampling, key)} exceeds "
                                 f"partition.num_clients={self.partition.num_clients}")
        return self

    # --- conversions ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario, every default filled in; None values dropped."""
        data = self.model_dump(mode="json", exclude_none=True)
        return data

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """Flattened to Flower's run-config form (dotted keys, scalar values)."""
        return flatten(self.to_dict())

# --- dict helpers -------------------------------------------------------------------


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys; lists become comma-joined strings (Flower's run config holds scalars)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, (list, tuple)):
            flat[path] = ",".join(map(str, value))
        else:
            flat[path] = value
    return flat


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for the dotted ``path`` "a.b.c", making tables on the way."""
    node = tree
    *parents, leaf = path.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part!r} is a value, not a table")
        node = child
    node[leaf] = value


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(tree, path, value)
    return tree


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (3, 0.1, true, "x"), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides with dotted keys (``strategy.fedprox.proximal_mu=0.01``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        set_path(tree, key.strip(), parse_value(text.strip()))
    return tree


# --- loading and error messages -----------------------------------------------------


def format_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first error of a pydantic validation, as one line naming the dotted key."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # A discriminated union puts the tag ("dirichlet") into the path: drop it.
    if len(loc) >= 2 and loc[0] == "partition" and loc[1] in _PARTITION_KINDS:
        model = _PARTITION_KINDS[loc.pop(1)]
    key = ".".join(loc)
    kind = first["type"]
    got = first.get("input")
    msg = first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        owner = model or (_SECTIONS.get(loc[0]) if len(loc) > 1 else Scenario)
        allowed = ", ".join(owner.model_fields) if owner else "?"
        return f"{key}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = got.get("kind") if isinstance(got, dict) else got
        return f"{key}.kind: {tag!r} is not a partition kind; allowed: {', '.join(_PARTITION_KINDS)}"
    if kind == "literal_error":
        return f"{key}: {got!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    if not key:  # a check across keys: its message names them
        return msg
    if isinstance(got, (dict, list)) or repr(got) in msg:
        return f"{key}: {msg}"
    return f"{key}: {msg} (got {got!r})"


_PARTITION_KINDS = PARTITION_KINDS
_SECTIONS: dict[str, type[BaseModel]] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "client": ClientConfig,
    "sampling": SamplingConfig,
    "mlflow": MlflowConfig,
}


def _check_strategy_tables(tree: dict[str, Any]) -> None:
    """Every key of ``[strategy]`` but ``name`` and ``addons`` is a table of parameters."""
    strategy = tree.get("strategy")
    if not isinstance(strategy, dict):
        return
    for key, value in strategy.items():
        if key not in StrategyConfig.model_fields and not isinstance(value, dict):
            raise ConfigError(f"strategy.{key}: a strategy's parameters go in its own table, "
                              f"e.g. strategy.<name>.{key} = {value!r}")


def parse_scenario(tree: dict[str, Any]) -> Scenario:
    """Validate a scenario tree (the strategy's own tables are validated where the apps
    are built, by :func:`flowerbed.strategies.resolve_strategy`)."""
    _check_strategy_tables(tree)
    try:
        return Scenario.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_error(err)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: scenario file not found")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    tree.setdefault("name", path.stem)
    return parse_scenario(apply_overrides(tree, overrides or []))
