"""Bad inputs to `flowerbed run`, generated: each is (name, argv after `run`, what the
one-line error must name). Used by tests/test_config_fuzz.py and timed one process
each by bench/config_rejection.py."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "sims" / "quickstart.toml")

# key -> (a value below its range, a value above it or None); every number of the schema.
NUMBERS = {
    "rounds": ("0", None), "seed": ("-1", str(2**32)), "model.hidden": ("0", str(2**31)),
    "client.local_epochs": ("0", None), "client.max_local_steps": ("0", None), "client.batch_size": ("0", None),
    "client.lr": ("0", None), "client.momentum": ("-0.1", "1.0"), "client.weight_decay": ("-1.0", None),
    "client.translate_pixels": ("-1", "9"), "client.num_cpus": ("0", None), "client.num_gpus": ("-1.0", None),
    "sampling.fraction_train": ("0.0", "1.5"), "sampling.fraction_evaluate": ("-0.1", "1.1"),
    "sampling.min_clients": ("0", None), "sampling.evaluate_every": ("0", None),
    "sampling.max_reply_mb": ("0.0", None), "sampling.min_success_fraction": ("-0.5", "1.5"),
    "sampling.max_skipped_rounds": ("0", None), "sampling.round_timeout_s": ("0.0", None),
    "partition.num_clients": ("0", None), "partition.alpha": ("0.0", None), "checkpoint.every": ("-1", None),
}
SECTIONS = ["dataset", "partition", "model", "client", "sampling", "checkpoint", "mlflow"]


def variants(tmp: Path) -> list[tuple[str, list[str], str]]:
    """The bad inputs; files they need are written under ``tmp``."""
    cases: list[tuple[str, list[str], str]] = []

    def bad_set(name: str, assignment: str, names: str) -> None:
        cases.append((name, [QUICKSTART, "--set", assignment], names))

    for key, (low, high) in NUMBERS.items():  # wrong types: booleans and strings for numbers
        bad_set(f"{key}=true", f"{key}=true", key)
        bad_set(f"{key}=string", f"{key}='3'", key)
        bad_set(f"{key} below range", f"{key}={low}", key)
        if high is not None:
            bad_set(f"{key} above range", f"{key}={high}", key)
    for section in SECTIONS:  # unknown keys at every level
        bad_set(f"unknown {section}.key", f"{section}.no_such_key=1", f"{section}.no_such_key")
    bad_set("unknown top-level key", "no_such_key=1", "no_such_key")
    bad_set("unknown strategy", "strategy.name='no_such_strategy'", "strategy.name")
    bad_set("unknown strategy option", "strategy.fedprox.no_such_option=1", "no_such_option")
    bad_set("unknown dataset", "dataset.name='no_such_data'", "dataset.name")
    bad_set("unknown model", "model.name='no_such_model'", "model.name")
    bad_set("unknown partition kind", "partition.kind='no_such_kind'", "partition.kind")
    bad_set("unknown optimizer", "client.optimizer='lbfgs'", "client.optimizer")
    bad_set("a graph dataset in an image scenario", "dataset.name='cora'", "dataset.name")
    bad_set("min_clients above num_clients", "sampling.min_clients=11", "sampling.min_clients")
    bad_set("empty experiment name", "mlflow.experiment=''", "mlflow.experiment")
    cases.append(("100k-character experiment name", [QUICKSTART, "--experiment", "x" * 100_000], "mlflow.experiment"))
    # Impossible partitions: too many clients for the data (which setting to change).
    bad_set("200 clients on digits", "partition.num_clients=200", "partition.num_clients")
    bad_set("1000 clients on digits", "partition.num_clients=1000", "partition.num_clients")
    # Resources this machine lacks.
    bad_set("64 CPUs a client", "client.num_cpus=64.0", "client.num_cpus")
    bad_set("a GPU a client", "client.num_gpus=1.0", "client.num_gpus")
    # Unusable tracking stores.
    cases.append(("unknown store scheme", [QUICKSTART, "--tracking-uri", "bogus://x"], "mlflow.tracking_uri"))
    cases.append(("SQLite in a missing folder", [QUICKSTART, "--tracking-uri", f"sqlite:///{tmp}/no/such/m.db"],
                  "mlflow.tracking_uri"))
    cases.append(("a server nobody runs", [QUICKSTART, "--tracking-uri", "http://127.0.0.1:9"], "mlflow.tracking_uri"))
    # Malformed --set.
    bad_set("--set without =", "rounds", "rounds")
    bad_set("--set without key", "=3", "=3")
    bad_set("--set without value", "rounds=", "rounds")
    bad_set("--set broken TOML value", "rounds=[1", "rounds")
    cases.append(("--tag without =", [QUICKSTART, "--tag", "novalue"], "--tag"))
    # Files.
    empty, binary, broken = tmp / "empty.toml", tmp / "binary.toml", tmp / "broken.toml"
    empty.write_text("")
    binary.write_bytes(bytes(range(256)))
    broken.write_text("rounds = \n[dataset\n")
    cases += [("empty file", [str(empty)], "rounds"), ("binary file", [str(binary)], "binary.toml"),
              ("broken TOML", [str(broken)], "broken.toml"),
              ("missing file", [str(tmp / "missing.toml")], "missing.toml"), ("a folder", [str(tmp)], str(tmp))]
    cases.append(("no scenario", [], "scenario"))
    cases.append(("resume with a scenario", [QUICKSTART, "--resume", "last"], "--resume"))
    cases.append(("resume nothing", ["--resume", "last", "--tracking-uri", f"sqlite:///{tmp}/empty.db"], "--resume"))
    return cases
