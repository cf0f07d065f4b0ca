"""Non-IID partitions of real data, each client's local test split, and few-label splits.

Every ``[partition]`` kind of a scenario is a pydantic model here and a function that
makes it. `flwr-datasets` does the IID, Dirichlet and pathological splits; what it
lacks is written here: the long tail (FedLoGe), GGEUR's one-per-class-then-Dirichlet
split, domains and per-class Dirichlet over domains (GGEUR's LDS), few labels
(FedLabel) and METIS subgraphs (FED-PUB).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowerbed.sims.datasets import ArrayDataset, GraphDataset, load_dataset

#: The class-group thresholds of FedLoGe's ``shot_split``: cumulative training share.
HEAD_SHARE, MIDDLE_SHARE = 0.75, 0.95


class PartitionError(ValueError):
    """A partition that cannot be made; the message names the scenario key."""


# --- the [partition] table, one model per kind ----------------------------------------


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no bool for a number
    num_clients: int = Field(ge=1, le=100_000)
    # Each client's local test split: this many test samples per training sample of a
    # class, drawn from the held-out test set. None: |test set| / |training set used|.
    local_test_ratio: float | None = Field(default=None, gt=0, le=10)
    # Few labels (FedLabel): the share of each client's training samples that keep
    # their label; the rest reach the trainer without one.
    labeled_fraction: float = Field(default=1.0, gt=0, le=1)


class IidPartition(_Base):
    kind: Literal["iid"]


class DirichletPartition(_Base):
    kind: Literal["dirichlet"]
    alpha: float = Field(gt=0)
    # flwr-datasets redraws until every client holds at least this many samples.
    min_partition_size: int = Field(default=10, ge=0)
    # GGEUR's split: every client first gets this many samples of every class, then
    # the rest of each class is cut by Dir(alpha) (0: plain flwr-datasets Dirichlet).
    min_per_class: int = Field(default=0, ge=0)


class PathologicalPartition(_Base):
    kind: Literal["pathological"]
    classes_per_client: int = Field(default=2, ge=1)


class LongtailDirichletPartition(_Base):
    kind: Literal["longtail_dirichlet"]
    # n_max / n_min of the exponential class profile n_c = n_max * IF^(-c / (C - 1)).
    imbalance_factor: float = Field(ge=1)
    alpha: float = Field(gt=0)
    # "multinomial": each sample drawn to a client by p_c ~ Dir(alpha), as FedLoGe's
    # code; "proportional": flwr-datasets' DirichletPartitioner cut.
    assignment: Literal["multinomial", "proportional"] = "multinomial"


def _split_names(value):
    """Domain lists may come as one comma-joined string (Flower's run config)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value) if isinstance(value, list) else value


class DomainPartition(_Base):
    kind: Literal["domain"]
    # Domains that become clients (default: all of the dataset's), in this order.
    domains: tuple[str, ...] | None = None
    clients_per_domain: int = Field(default=1, ge=1)
    # Keep this many training samples per client (stratified); None: all.
    samples_per_client: int | None = Field(default=None, ge=1)
    # Hold out this fraction of each client's share of its domain's training pool as its
    # validation split (stratified, never trained on), for a best-validation-round metric.
    val_fraction: float = Field(default=0.0, ge=0, lt=1)

    _names = field_validator("domains", mode="before")(_split_names)


class DomainDirichletPartition(_Base):
    kind: Literal["domain_dirichlet"]
    alpha: float = Field(gt=0)
    domains: tuple[str, ...] | None = None

    _names = field_validator("domains", mode="before")(_split_names)


class SubgraphDisjointPartition(_Base):
    kind: Literal["subgraph_disjoint"]


class SubgraphOverlapPartition(_Base):
    kind: Literal["subgraph_overlap"]
    num_communities: int = Field(ge=1)
    clients_per_community: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _clients_add_up(self) -> "SubgraphOverlapPartition":
        if self.num_clients != self.num_communities * self.clients_per_community:
            raise ValueError(
                f"partition.num_clients={self.num_clients} must equal num_communities x "
                f"clients_per_community = {self.num_communities * self.clients_per_community}"
            )
        return self


PARTITION_KINDS: dict[str, type[_Base]] = {
    "iid": IidPartition,
    "dirichlet": DirichletPartition,
    "pathological": PathologicalPartition,
    "longtail_dirichlet": LongtailDirichletPartition,
    "domain": DomainPartition,
    "domain_dirichlet": DomainDirichletPartition,
    "subgraph_disjoint": SubgraphDisjointPartition,
    "subgraph_overlap": SubgraphOverlapPartition,
}
GRAPH_KINDS = ("subgraph_disjoint", "subgraph_overlap")
DOMAIN_KINDS = ("domain", "domain_dirichlet")

PartitionConfig = Annotated[
    IidPartition | DirichletPartition | PathologicalPartition | LongtailDirichletPartition
    | DomainPartition | DomainDirichletPartition | SubgraphDisjointPartition | SubgraphOverlapPartition,
    Field(discriminator="kind"),
]


# --- what a partition produces ---------------------------------------------------------


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ClientSplit:
    """One client's rows. Array data: ``train`` (labelled) and ``unlabeled`` rows of the
    training set, ``test`` rows of the test set. Graphs: ``train`` holds the client's
    node ids (its subgraph is induced on them; node masks say train / val / test)."""

    train: np.ndarray
    test: np.ndarray = field(default_factory=_empty)
    unlabeled: np.ndarray = field(default_factory=_empty)
    domain: str | None = None
    community: int | None = None
    # Array data: rows of the training set held out for validation (never trained on).
    val: np.ndarray = field(default_factory=_empty)


@dataclass(frozen=True, eq=False)
class Partition:
    clients: list[ClientSplit]
    # FedLoGe's head / middle / tail classes (long-tailed partitions only).
    class_groups: dict[str, list[int]] = field(default_factory=dict)

    def domain_tests(self) -> dict[str, np.ndarray]:
        """Domain partitions: each domain's test rows (its clients' test split); else empty."""
        return {c.domain: c.test for c in self.clients if c.domain}


# --- helpers ---------------------------------------------------------------------------


def class_groups(counts: np.ndarray) -> dict[str, list[int]]:
    """Head / middle / tail by cumulative share of samples (classes sorted by count,
    descending): a class whose preceding share is below 75% is head, below 95% middle."""
    order = np.argsort(-counts, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(counts[order])[:-1]]) / counts.sum()
    groups: dict[str, list[int]] = {"head": [], "middle": [], "tail": []}
    for c, share in zip(order, before):
        group = "head" if share < HEAD_SHARE else "middle" if share < MIDDLE_SHARE else "tail"
        groups[group].append(int(c))
    return {k: sorted(v) for k, v in groups.items()}


def longtail_counts(num_per_class: int, num_classes: int, imbalance_factor: float) -> np.ndarray:
    """n_c = floor(n_max * IF^(-c / (C - 1))): class 0 is the head."""
    c = np.arange(num_classes)
    return np.floor(num_per_class * imbalance_factor ** (-c / max(num_classes - 1, 1))).astype(np.int64)


def local_test_split(train_labels: np.ndarray, test_labels: np.ndarray, ratio: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Test rows for one client: ``floor(ratio * n_c)`` samples (at least one) of each
    class c it trains on, drawn without replacement from the held-out test set."""
    classes, counts = np.unique(train_labels, return_counts=True)
    picked = []
    for c, n_c in zip(classes, counts):
        pool = np.flatnonzero(test_labels == c)
        take = min(len(pool), max(1, int(ratio * n_c)))
        picked.append(rng.choice(pool, size=take, replace=False))
    return np.sort(np.concatenate(picked)) if picked else _empty()


def _flwr_split(labels: np.ndarray, rows: np.ndarray, partitioner, clients: int) -> list[np.ndarray]:
    """Run a flwr-datasets partitioner over ``rows`` (with their labels); row indices back.
    ``clients`` names the count in the error: asking a failed partitioner for its
    ``num_partitions`` draws the partition again and raises the same error."""
    from datasets import Dataset

    partitioner.dataset = Dataset.from_dict({"label": labels[rows].tolist(), "row": rows.tolist()})
    try:
        with warnings.catch_warnings():  # a multi-line warning per redraw; giving up is reported below
            warnings.filterwarnings("ignore", message="The specified min_partition_size", category=UserWarning)
            # Through Arrow: iterating a `datasets` column goes row by row (seconds).
            return [np.sort(partitioner.load_partition(i).with_format("arrow")["row"].to_numpy().astype(np.int64))
                    for i in range(partitioner.num_partitions)]
    except ValueError as err:  # flwr-datasets gives up after its redraws
        raise PartitionError(
            f"partition: {clients} clients cannot each get a share of {len(rows)} samples at this skew; lower "
            "partition.num_clients or raise partition.alpha (kind = \"dirichlet\": or lower "
            f"partition.min_partition_size) (flwr-datasets: {err})") from None


def _dirichlet_cut(rows_by_class: list[np.ndarray], num_clients: int, alpha: float,
                   rng: np.random.Generator, multinomial: bool) -> list[np.ndarray]:
    """Spread each class over clients by p ~ Dir(alpha): per-sample draws (multinomial)
    or a proportional cut of the shuffled class."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for rows in rows_by_class:
        p = rng.dirichlet(np.full(num_clients, alpha))
        if multinomial:
            owner = rng.choice(num_clients, size=len(rows), p=p)
            for k in range(num_clients):
                parts[k].append(rows[owner == k])
        else:
            shuffled = rng.permutation(rows)
            cuts = (np.cumsum(p)[:-1] * len(rows)).astype(int)
            for k, chunk in enumerate(np.split(shuffled, cuts)):
                parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _check_nonempty(parts: list[np.ndarray], what: str) -> None:
    empty = [k for k, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise PartitionError(f"{what}: client(s) {empty[:5]} would get no training sample; "
                             "use fewer clients or a larger alpha")


# --- the kinds -------------------------------------------------------------------------


def _label_skew(data: ArrayDataset, cfg, seed: int) -> tuple[list[np.ndarray], dict]:
    """Training rows per client for iid / dirichlet / pathological / longtail_dirichlet."""
    y, n = data.y_train, cfg.num_clients
    if n > len(y):
        raise PartitionError(f"partition.num_clients={n} exceeds the {len(y)} training samples")
    if cfg.kind == "dirichlet" and cfg.min_per_class == 0 and n * cfg.min_partition_size > len(y):
        # No draw can succeed: say so before loading flwr-datasets and trying.
        raise PartitionError(
            f"partition: {n} clients x partition.min_partition_size={cfg.min_partition_size} exceed the "
            f"{len(y)} training samples; lower partition.num_clients or partition.min_partition_size")
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    rng = np.random.default_rng(seed)
    # Rows are shuffled by the seed first so that IID (contiguous shards) depends on it too.
    rows = rng.permutation(len(y))
    if cfg.kind == "iid":
        return _flwr_split(y, rows, IidPartitioner(num_partitions=n), n), {}
    if cfg.kind == "pathological":
        if cfg.classes_per_client > data.num_classes:
            raise PartitionError(f"partition.classes_per_client={cfg.classes_per_client} exceeds "
                                 f"the {data.num_classes} classes")
        return _flwr_split(y, rows, PathologicalPartitioner(
            num_partitions=n, partition_by="label", num_classes_per_partition=cfg.classes_per_client,
            class_assignment_mode="first-deterministic", shuffle=True, seed=seed), n), {}
    if cfg.kind == "dirichlet" and cfg.min_per_class == 0:
        return _flwr_split(y, rows, DirichletPartitioner(
            num_partitions=n, partition_by="label", alpha=cfg.alpha,
            min_partition_size=cfg.min_partition_size, self_balancing=False, shuffle=True, seed=seed), n), {}
    if cfg.kind == "dirichlet":  # GGEUR: min_per_class of every class first, then Dirichlet
        base: list[list[np.ndarray]] = [[] for _ in range(n)]
        rest = []
        for c in range(data.num_classes):
            rows_c = rng.permutation(np.flatnonzero(y == c))
            need = n * cfg.min_per_class
            if len(rows_c) < need:
                raise PartitionError(f"partition.num_clients={n} x min_per_class={cfg.min_per_class} "
                                     f"exceeds the {len(rows_c)} samples of class {c}")
            for k in range(n):
                base[k].append(rows_c[k * cfg.min_per_class:(k + 1) * cfg.min_per_class])
            rest.append(rows_c[need:])
        cut = _dirichlet_cut(rest, n, cfg.alpha, rng, multinomial=False)
        return [np.sort(np.concatenate([*b, c])) for b, c in zip(base, cut)], {}
    # longtail_dirichlet: subsample to the exponential profile (a fixed draw, as the
    # dataset itself), then spread each class over the clients.
    n_max = int(np.bincount(y).max())
    counts = longtail_counts(n_max, data.num_classes, cfg.imbalance_factor)
    pick = np.random.default_rng(0)
    kept = [np.sort(pick.choice(np.flatnonzero(y == c), size=min(int(k), int((y == c).sum())),
                                replace=False)) for c, k in enumerate(counts)]
    if cfg.assignment == "proportional":
        lt_rows = rng.permutation(np.concatenate(kept))
        parts = _flwr_split(y, lt_rows, DirichletPartitioner(
            num_partitions=n, partition_by="label", alpha=cfg.alpha, min_partition_size=1,
            self_balancing=False, shuffle=True, seed=seed), n)
    else:
        parts = _dirichlet_cut(kept, n, cfg.alpha, rng, multinomial=True)
    _check_nonempty(parts, "partition.num_clients")
    return parts, {"class_groups": class_groups(np.array([len(k) for k in kept]))}


def _domain_rows(data: ArrayDataset, cfg) -> list[tuple[int, str]]:
    if not data.domains:
        raise PartitionError(f"partition.kind={cfg.kind!r} needs a multi-domain dataset; "
                             f"{data.name!r} has no domains")
    chosen = cfg.domains or data.domains
    unknown = [d for d in chosen if d not in data.domains]
    if unknown:
        raise PartitionError(f"partition.domains: {unknown[0]!r} is not a domain of {data.name}; "
                             f"allowed: {', '.join(data.domains)}")
    return [(data.domains.index(d), d) for d in chosen]


def _stratified_take(rows: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows, classes in proportion (largest remainders), drawn at random."""
    classes, counts = np.unique(labels[rows], return_counts=True)
    quota = counts * size / len(rows)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take))[: size - take.sum()]] += 1
    return np.sort(np.concatenate([rng.choice(rows[labels[rows] == c], size=t, replace=False)
                                   for c, t in zip(classes, take)]))


def _domains(data: ArrayDataset, cfg, seed: int) -> list[ClientSplit]:
    rng = np.random.default_rng(seed)
    chosen = _domain_rows(data, cfg)
    per_domain = cfg.clients_per_domain if cfg.kind == "domain" else 1
    if cfg.num_clients != len(chosen) * per_domain:
        raise PartitionError(f"partition.num_clients={cfg.num_clients} must be the number of domains "
                             f"({len(chosen)}) x clients_per_domain ({per_domain})")
    if cfg.kind == "domain_dirichlet":  # GGEUR's LDS: per class, q_c ~ Dir(alpha) over domains
        keep = {d: [] for d, _ in chosen}
        for c in range(data.num_classes):
            q = rng.dirichlet(np.full(len(chosen), cfg.alpha))
            for (d, _), share in zip(chosen, q):
                rows_dc = rng.permutation(np.flatnonzero((data.domain_train == d) & (data.y_train == c)))
                keep[d].append(rows_dc[: int(np.floor(share * len(rows_dc)))])
        trains = [np.sort(np.concatenate(keep[d])) for d, _ in chosen]
        _check_nonempty(trains, "partition.alpha")
        return [ClientSplit(t, np.flatnonzero(data.domain_test == d), domain=name)
                for t, (d, name) in zip(trains, chosen)]
    clients = []
    for d, name in chosen:
        rows = rng.permutation(np.flatnonzero(data.domain_train == d))
        test = np.flatnonzero(data.domain_test == d)
        for chunk in np.array_split(rows, per_domain):
            train = chunk
            if cfg.samples_per_client is not None:
                if cfg.samples_per_client > len(chunk):
                    raise PartitionError(f"partition.samples_per_client={cfg.samples_per_client} exceeds "
                                         f"the {len(chunk)} training samples of a {name} client")
                train = _stratified_take(chunk, data.y_train, cfg.samples_per_client, rng)
            val = _validation_rows(chunk, train, data.y_train, cfg, [seed, len(clients)], name)
            clients.append(ClientSplit(np.sort(np.setdiff1d(train, val)), test, domain=name, val=val))
    return clients


def _validation_rows(chunk: np.ndarray, train: np.ndarray, labels: np.ndarray, cfg, seed: list[int],
                     name: str) -> np.ndarray:
    """``val_fraction`` of a client's ``chunk``, stratified, from the rows it does not train
    on (from the whole chunk when it trains on all of it). Its own random stream, so the
    training rows are those drawn without a validation split."""
    size = int(round(cfg.val_fraction * len(chunk)))
    if size == 0:
        return _empty()
    spare = np.setdiff1d(chunk, train) if len(train) < len(chunk) else chunk
    if size > len(spare):
        raise PartitionError(f"partition.val_fraction={cfg.val_fraction} needs {size} validation samples; "
                             f"a {name} client has {len(spare)} besides its training samples")
    return _stratified_take(spare, labels, size, np.random.default_rng([*seed, 0x5A1]))


def _hide_labels(clients: list[ClientSplit], fraction: float, rng: np.random.Generator) -> list[ClientSplit]:
    """FedLabel: each client keeps the labels of a uniform ``fraction`` of its samples."""
    out = []
    for client in clients:
        shuffled = rng.permutation(client.train)
        n_labeled = max(1, int(fraction * len(shuffled)))
        out.append(ClientSplit(np.sort(shuffled[:n_labeled]), client.test, np.sort(shuffled[n_labeled:]),
                               client.domain, client.community, client.val))
    return out


def make_partition(data, cfg, seed: int) -> Partition:
    """Partition ``data`` (an ArrayDataset or GraphDataset) as ``cfg`` says."""
    is_graph = isinstance(data, GraphDataset)
    if is_graph != (cfg.kind in GRAPH_KINDS):
        raise PartitionError(f"partition.kind={cfg.kind!r} does not fit dataset {data.name!r}: "
                             f"subgraph kinds are for graphs, the others for array data")
    if is_graph:
        return _subgraphs(data, cfg, seed)
    extra: dict = {}
    if cfg.kind in DOMAIN_KINDS:
        clients = _domains(data, cfg, seed)
    else:
        trains, extra = _label_skew(data, cfg, seed)
        used = sum(len(t) for t in trains)
        ratio = cfg.local_test_ratio or len(data.y_test) / used
        rng = np.random.default_rng([seed, 1])
        clients = [ClientSplit(t, local_test_split(data.y_train[t], data.y_test, ratio, rng)) for t in trains]
    if cfg.labeled_fraction < 1:
        clients = _hide_labels(clients, cfg.labeled_fraction, np.random.default_rng([seed, 2]))
    return Partition(clients, **extra)


def _subgraphs(data, cfg, seed: int) -> Partition:
    from flowerbed.sims.graphs import disjoint_subgraphs, overlapping_subgraphs

    if cfg.labeled_fraction < 1:
        raise PartitionError("partition.labeled_fraction: few-label splits are for array data")
    if cfg.num_clients > data.graph.num_nodes // 4:
        raise PartitionError(f"partition.num_clients={cfg.num_clients} is too many for "
                             f"{data.graph.num_nodes} nodes")
    if cfg.kind == "subgraph_disjoint":
        nodes = disjoint_subgraphs(data.graph, cfg.num_clients, seed)
        clients = [ClientSplit(n.numpy()) for n in nodes]
    else:
        nodes, community = overlapping_subgraphs(data.graph, cfg.num_communities,
                                                 cfg.clients_per_community, seed)
        clients = [ClientSplit(n.numpy(), community=c) for n, c in zip(nodes, community)]
    train = data.graph.train.numpy()
    without_train = [k for k, c in enumerate(clients) if not train[c.train].any()]
    if without_train:
        raise PartitionError(f"partition.num_clients={cfg.num_clients}: client(s) {without_train[:5]} "
                             "would hold no training node")
    return Partition(clients)


#: "0": never read or write partitions on disk (see :func:`_cached_partition`).
PARTITION_CACHE_ENV = "FLOWERBED_PARTITION_CACHE"


@functools.lru_cache(maxsize=8)
def _cached_partition(dataset, partition, seed: int) -> Partition:
    """Made once per process, and kept on disk (the writable cache, never the data
    root): a run of a partition made before reads it back in milliseconds, without
    loading flwr-datasets (Hugging Face ``datasets``: seconds of imports). The file's
    name digests everything the partition depends on: the tables, the seed, the
    labels (and domains, graph) of the data, this code and flwr-datasets' version."""
    data = load_dataset(dataset)
    if os.environ.get(PARTITION_CACHE_ENV) == "0":
        return make_partition(data, partition, seed)
    from flowerbed.sims.base import resolve_data_root
    from flowerbed.sims.cache import writable_cache

    path = writable_cache(resolve_data_root(dataset.root)) / "partitions" / f"{_digest(data, dataset, partition, seed)}.pkl"
    with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        with open(path, "rb") as f:
            return pickle.load(f)
    made = make_partition(data, partition, seed)
    with contextlib.suppress(OSError):  # a cache that cannot be written is no error
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as f:
            pickle.dump(made, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)  # whole or absent, whoever reads it
    return made


def _digest(data, dataset, partition, seed: int) -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    for part in (dataset.model_dump_json(), partition.model_dump_json(), str(seed), version("flwr-datasets")):
        h.update(part.encode())
    here = Path(__file__).parent
    for source in ("partitions.py", "graphs.py"):
        h.update((here / source).read_bytes())
    if isinstance(data, GraphDataset):
        arrays = [getattr(data.graph, k).numpy() for k in ("y", "edge_index", "train", "val", "test")]
    else:
        arrays = [data.y_train, data.y_test, np.array(data.x_train.shape), np.array(data.x_test.shape),
                  *(a for a in (data.domain_train, data.domain_test) if a is not None)]
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


#: Partitions this process did not compute: a simulation's driver made them once and
#: shares them with its actors, by (dataset, partition, seed) tables.
ADOPTED: dict[tuple, Partition] = {}


def partition_key(scenario) -> tuple:
    """What a scenario's partition depends on: its dataset and partition tables, its seed."""
    return scenario.dataset, scenario.partition, scenario.seed


def scenario_partition(scenario) -> Partition:
    """The scenario's partition, computed once per process and cached (or adopted)."""
    key = partition_key(scenario)
    if key in ADOPTED:
        return ADOPTED[key]
    return _cached_partition(*key)
