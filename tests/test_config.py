"""Scenario validation: bad input fails before anything starts, with a one-line error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import tomli_w

from flowerbed.server.cli import EXIT_BAD_INPUT, main
from flowerbed.sims.config import ConfigError, Scenario, load_scenario, parse_scenario
from flowerbed.sims.run_config import read_run_config
from flowerbed.strategies import resolve_strategy

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "seed": 0,
    "rounds": 2,
    "dataset": {"name": "digits"},
    "partition": {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5},
    "model": {"name": "mlp"},
    "strategy": {"name": "fedavg"},
    "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.05},
    "sampling": {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_clients": 2},
    "mlflow": {"experiment": "bad"},
}


def edited(path: str, value) -> dict:
    """BASE with ``path`` (dotted) set to ``value``; a value of ``...`` deletes the key."""
    tree = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return tree


# (dotted key edited, value, text the one-line error must contain)
BAD = [
    ("partition.alhpa", 0.3, "partition.alhpa: unknown key"),
    ("colour", "blue", "colour: unknown key"),
    ("rounds", 0, "rounds"),
    ("rounds", "ten", "rounds"),
    ("sampling.fraction_train", 1.5, "sampling.fraction_train"),
    ("sampling.fraction_evaluate", -0.1, "sampling.fraction_evaluate"),
    ("partition.alpha", -1.0, "partition.alpha"),
    ("partition.alpha", ..., "partition.alpha: required key is missing"),
    ("strategy.name", "fedfoo", "fedavg"),
    ("dataset.name", "imagenet", "'digits'"),
    ("partition.kind", "zipf", "iid, dirichlet, pathological"),
    ("model.name", "resnet", "'mlp'"),
    ("client.optimizer", "lbfgs", "client.optimizer"),
    ("client.batch_size", 0, "client.batch_size"),
    ("client.num_gpus", -1, "client.num_gpus"),
    ("strategy.proximal_mu", 0.1, "strategy.proximal_mu: a strategy's parameters go in its own table"),
    ("strategy.fedprox.proximal_mu", -1, "strategy.fedprox.proximal_mu: Input should be greater than"),
    ("strategy.fedprox.bogus", 1, "strategy.fedprox.bogus: unknown key for strategy 'fedprox'; allowed keys "
                                  "here: proximal_mu"),
    ("strategy.fedfoo.x", 1, "strategy.fedfoo: no strategy or add-on of that name"),
    ("strategy.addons", ["nope"], "strategy.addons: unknown add-on 'nope'; allowed: ggeur"),
    ("strategy.name", "fedpub", "strategy.name: 'fedpub' needs model.name in ['masked_gcn'], not 'mlp'"),
    ("sampling.min_clients", 9, "sampling.min_clients"),
    ("partition.num_clients", 0, "partition.num_clients"),
    # Strict types: a boolean or a string is not a number, a float not an int.
    ("rounds", True, "rounds: Input should be a valid integer"),
    ("client.lr", True, "client.lr: Input should be a valid number"),
    ("client.lr", "0.1", "client.lr: Input should be a valid number"),
    ("partition.num_clients", 4.0, "partition.num_clients: Input should be a valid integer"),
    ("partition.alpha", False, "partition.alpha: Input should be a valid number"),
    ("strategy.fedprox.proximal_mu", True, "strategy.fedprox.proximal_mu: Input should be a valid number"),
    ("sampling.fraction_train", 0.0, "sampling.fraction_train: Input should be greater than 0"),
    ("sampling.max_reply_mb", 0, "sampling.max_reply_mb"),
    # Upper bounds: caught here, not by numpy's seeding or the allocator after Ray started.
    ("seed", 2**64, "seed: Input should be less than or equal to 4294967295"),
    ("model.hidden", 2**31, "model.hidden: Input should be less than or equal to 65536"),
]


@pytest.mark.parametrize("key,value,expected", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_config_is_one_line_error_naming_the_key(key, value, expected):
    with pytest.raises(ConfigError) as info:
        resolve_strategy(parse_scenario(edited(key, value)))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    # The error names the key it is about (the top of the dotted path at least).
    assert key.split(".")[0] in message


def test_strategy_error_names_allowed_values():
    with pytest.raises(ConfigError, match="allowed: fedavg, fedprox"):
        resolve_strategy(parse_scenario(edited("strategy.name", "fedfoo")))


def test_strategy_tables_are_checked_even_when_not_in_use():
    """A file may carry tuned options for several strategies; each table is still
    checked against its strategy, and only the named one is used."""
    tree = edited("strategy", {"name": "fedprox", "fedprox": {"proximal_mu": 0.5}, "fedbabu": {"finetune_epochs": 3}})
    resolved = resolve_strategy(parse_scenario(tree))
    assert resolved.params.proximal_mu == 0.5 and resolved.method == "fedprox(proximal_mu=0.5)"
    assert resolve_strategy(parse_scenario(edited("strategy.name", "fedprox"))).method == "fedprox"
    with pytest.raises(ConfigError, match=r"strategy\.fedbabu\.finetune_epochs"):
        tree["strategy"]["fedbabu"] = {"finetune_epochs": -1}
        resolve_strategy(parse_scenario(tree))


def test_name_plus_addon_is_the_short_form_of_addons():
    short = parse_scenario(edited("strategy.name", "fedprox+ggeur")).strategy
    assert (short.name, short.addons, short.method) == ("fedprox", ("ggeur",), "fedprox+ggeur")
    flat = parse_scenario(edited("strategy", {"name": "fedprox", "addons": "ggeur"})).strategy
    assert flat == short


def _write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_bytes(tomli_w.dumps(tree).encode())
    return path


@pytest.mark.parametrize("key,value", [("rounds", 0), ("partition.alpha", -1.0),
                                       ("strategy.name", "nope"), ("partition.alhpa", 1.0)])
def test_cli_exits_2_and_leaves_no_mlflow_run(tmp_path, capsys, monkeypatch, key, value):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    scenario = _write(tmp_path, edited(key, value))
    code = main(["run", str(scenario), "--tracking-uri", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert len(err.strip().splitlines()) == 1 and key.split(".")[-1] in err
    assert not db.exists(), "a rejected config must not create an MLflow store or run"


def test_cli_set_overrides_are_validated_too(tmp_path, capsys):
    scenario = _write(tmp_path, BASE)
    code = main(["run", str(scenario), "--set", "sampling.fraction_train=1.5",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == EXIT_BAD_INPUT
    assert "sampling.fraction_train" in capsys.readouterr().err


def test_missing_file_and_bad_toml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == EXIT_BAD_INPUT
    assert "nope.toml" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("rounds = = 3\n")
    assert main(["run", str(broken)]) == EXIT_BAD_INPUT
    assert "broken.toml" in capsys.readouterr().err


def test_non_utf8_file_is_named(tmp_path, capsys):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"rounds = 3\n# \xff\xfe\n")
    assert main(["run", str(binary)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "binary.toml: not UTF-8" in err


@pytest.mark.parametrize("key,value,expected", [("client.num_cpus", 4096, "client.num_cpus: 4096"),
                                                ("client.num_gpus", 0.5, "client.num_gpus: 0.5")])
def test_resources_the_machine_lacks_are_refused_before_workers(tmp_path, capsys, key, value, expected):
    if key == "client.num_gpus":
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    code = main(["run", str(_write(tmp_path, edited(key, value))), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == EXIT_BAD_INPUT
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1:1", "simulation.ray_address: nothing answers at 127.0.0.1:1"),
    ("no-port-here", "simulation.ray_address: 'no-port-here': expected HOST:PORT")])
def test_a_ray_cluster_address_nothing_answers_on_is_refused_before_workers(tmp_path, capsys, address, expected):
    code = main(["run", str(_write(tmp_path, BASE)), "--ray-address", address,
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()


def test_flag_values_reach_the_config_unchanged(tmp_path):
    from flowerbed.server.cli import build_parser, resolve

    odd = 'it\'s "a\\b" ü'
    args = build_parser().parse_args(["run", str(_write(tmp_path, BASE)), "--experiment", odd,
                                      "--tracking-uri", f"sqlite:///{tmp_path}/{odd}.db",
                                      "--data-root", str(tmp_path / odd)])
    scenario = resolve(args)
    assert scenario.mlflow.experiment == odd
    assert scenario.mlflow.tracking_uri == f"sqlite:///{tmp_path}/{odd}.db"
    assert scenario.dataset.root == str((tmp_path / odd).resolve())


def test_impossible_partition_fails_before_workers(tmp_path, capsys):
    tree = edited("partition", {"kind": "pathological", "num_clients": 4, "classes_per_client": 11})
    code = main(["run", str(_write(tmp_path, tree)), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == EXIT_BAD_INPUT
    assert "partition.classes_per_client" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()


def test_a_partition_too_fine_for_its_skew_says_what_to_change(tmp_path, capsys):
    # 100 x 10 samples fit digits' 1,437, but not at alpha 0.3: flwr-datasets' redraws give up.
    tree = edited("partition", {"kind": "dirichlet", "num_clients": 100, "alpha": 0.3})
    code = main(["run", str(_write(tmp_path, tree)), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1
    assert "100 clients" in err and "lower partition.num_clients or raise partition.alpha" in err


def test_missing_dataset_file_is_named(tmp_path, capsys):
    tree = edited("dataset.name", "fashion_mnist")
    code = main(["run", str(_write(tmp_path, tree)), "--data-root", str(tmp_path / "empty"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "train-images-idx3-ubyte" in err


def test_set_parses_toml_values_and_dotted_paths():
    scenario = load_scenario(REPO / "sims" / "quickstart.toml",
                             ["strategy.name=fedprox", "strategy.fedprox.proximal_mu=0.01", "rounds=3",
                              "mlflow.experiment=x y"])
    assert scenario.rounds == 3
    assert scenario.strategy.name == "fedprox" and scenario.strategy.table("fedprox") == {"proximal_mu": 0.01}
    assert scenario.mlflow.experiment == "x y"


def test_run_config_round_trip_is_lossless():
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", ["strategy.name=fedprox+ggeur",
                                                                  "strategy.ggeur.augment=isotropic"])
    flat = scenario.to_run_config()
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert read_run_config(flat).scenario == scenario


def test_pyproject_app_config_is_the_quickstart():
    import tomllib

    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    from_pyproject = read_run_config(app_config).scenario
    quickstart = load_scenario(REPO / "sims" / "quickstart.toml")
    assert from_pyproject == quickstart


def test_run_config_can_carry_a_whole_scenario():
    import tomllib

    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    by_name = read_run_config({**app_config, "scenario": "fedpub_cora_disjoint10",
                               "overrides": "rounds=3; strategy.fedpub.tau=5.0"}).scenario
    expected = load_scenario(REPO / "sims" / "fedpub_cora_disjoint10.toml", ["rounds=3", "strategy.fedpub.tau=5.0"])
    assert by_name == expected
    text = (REPO / "sims" / "fraug_mnist_usps.toml").read_text()
    assert read_run_config({**app_config, "scenario": text}).scenario == load_scenario(
        REPO / "sims" / "fraug_mnist_usps.toml").model_copy(update={"name": None})
    with pytest.raises(ConfigError, match="scenario: no scenario file 'nope'"):
        read_run_config({**app_config, "scenario": "nope"})


def test_plain_keys_beside_a_scenario_are_applied_not_dropped():
    import tomllib

    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    read = read_run_config({**app_config, "scenario": "fedpub_cora_disjoint10", "mlflow.experiment": "mine",
                            "overrides": "rounds=3"})
    assert read.scenario.mlflow.experiment == "mine" and read.scenario.rounds == 3
    assert read.scenario.strategy.name == "fedpub"  # the declared default "fedavg" did not apply
    assert read.applied == ("mlflow.experiment",)


def test_a_stock_flower_run_config_gets_the_quickstart_with_the_keys_it_understands():
    # What Flower's quickstart-pytorch ServerApp declares.
    read = read_run_config({"num-server-rounds": 3, "fraction-train": 0.5, "local-epochs": 1, "lr": 0.01,
                            "batch-size": 16, "fraction-evaluate": 1.0, "some-key": "x"})
    quickstart = load_scenario(REPO / "sims" / "quickstart.toml")
    assert not read.flowerbed and read.ignored == ("some-key",)
    assert read.scenario.client.model_dump() == {**quickstart.client.model_dump(), "local_epochs": 1, "lr": 0.01,
                                                 "batch_size": 16}
    assert (read.scenario.rounds, read.scenario.sampling.fraction_train) == (3, 0.5)
    assert read.scenario.dataset == quickstart.dataset and read.scenario.model == quickstart.model
    assert any("some-key" in note for note in read.notes())


def test_a_foreign_key_beside_flowerbed_keys_is_reported_not_an_error():
    read = read_run_config({**load_scenario(REPO / "sims" / "quickstart.toml").to_run_config(), "num-rounds": 3})
    assert read.flowerbed and read.ignored == ("num-rounds",) and read.scenario.rounds == 10
