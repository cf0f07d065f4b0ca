"""The quickstart app under Flower's Simulation Engine, driven by Flower's own CLI:
``flwr run .`` against a SuperLink in simulation mode, with the app's config from
``pyproject.toml`` (``[tool.flwr.app.config]``) and a few run-config overrides.

Flower 1.39 details this test pins down (see ``deploy/README.md``):

* ``flwr run .`` with the default ``local`` connection would start a SuperLink itself
  (``flwr/cli/local_superlink.py``) on fixed ports and without
  ``--disable-runtime-dependency-installation``, so each run would ``uv sync`` the app's
  dependencies (a multi-GB CUDA torch) into a fresh environment. The test starts
  ``flower-superlink --insecure --simulation --disable-runtime-dependency-installation``
  on a free port instead; in simulation mode it serves only that one HTTP port
  (Control + Runtime API) and no Fleet API.
* The federation's simulation config defaults to 2 simulated SuperNodes (since 1.32)
  with 2 CPUs per ClientApp; the app needs ``partition.num_clients`` of them. Per run,
  ``flwr run --federation-config "num-supernodes=N client-resources-num-cpus=1 ..."``
  merges over the federation's config (keys are ``SimulationConfig`` fields, ``-`` for
  ``_``); ``flwr federation simulation-config @none/default CONN --num-supernodes N``
  would set it on the SuperLink for every later run.
"""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

from flower_procs import (
    BIN,
    HOST,
    Processes,
    assert_mlflow_run,
    assert_one_completed,
    free_ports,
    processes,  # noqa: F401  (pytest fixture)
    wait_for_port,
    wait_for_runs,
    write_connection,
    write_run_config,
)

REPO = Path(__file__).resolve().parents[1]
CONNECTION = "flowerbed-sim"

RUN_TIMEOUT_S = 300.0  # `flwr run` to "finished" (about 35 s here on 2 busy cores)
ROUNDS = 2
RAY_CPUS = 2  # Ray's CPUs, whatever the machine: two 1-CPU ClientApps at a time


def app_num_clients() -> int:
    """The quickstart's ``partition.num_clients`` (10), from pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return int(tomllib.load(f)["tool"]["flwr"]["app"]["config"]["partition.num_clients"])


def test_flwr_run_in_simulation(processes: Processes, tmp_path: Path) -> None:
    num_clients = app_num_clients()
    experiment = f"flwr-run-simulation-{uuid.uuid4().hex[:12]}"
    tracking_uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    overrides_file = write_run_config(tmp_path / "run-config.toml", {
        "rounds": ROUNDS,
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.experiment": experiment,
    })

    (port,) = free_ports(1)
    homes = tmp_path / "flwr-home"

    def env_with_home(name: str) -> dict[str, str]:
        (homes / name).mkdir(parents=True, exist_ok=True)
        return {**processes.env, "FLWR_HOME": str(homes / name)}

    # The SuperLink runs each run's `flwr-simulation` (ServerApp + Ray-backed virtual
    # SuperNodes) through its SuperExec, from this virtualenv: no `uv sync`.
    superlink = processes.start("superlink", [
        str(BIN / "flower-superlink"), "--insecure", "--simulation",
        "--disable-runtime-dependency-installation",
        "--host", HOST, "--port", str(port),
    ], env=env_with_home("superlink"))
    wait_for_port(port, superlink, processes)

    cli_env = env_with_home("cli")
    write_connection(homes / "cli", CONNECTION, port)

    # One simulated SuperNode per partition (node config partition-id 0..N-1,
    # num-partitions N), 1 CPU per ClientApp, Ray capped at RAY_CPUS.
    federation_config = (
        f"num-supernodes={num_clients} client-resources-num-cpus=1 "
        f"init-args-num-cpus={RAY_CPUS}"
    )
    run_cli = processes.start("flwr-run", [
        str(BIN / "flwr"), "run", ".", CONNECTION,
        "--run-config", str(overrides_file),
        "--federation-config", federation_config,
        "--stream",
    ], env=cli_env, cwd=REPO)
    runs = wait_for_runs(run_cli, processes, ["superlink"], CONNECTION, cli_env, tmp_path, RUN_TIMEOUT_S)
    assert_one_completed(runs)

    assert_mlflow_run(tracking_uri, experiment, num_clients=num_clients, rounds=ROUNDS)

    # No runtime environment was installed: $FLWR_HOME holds the unpacked app only.
    size = sum(f.stat().st_size for f in homes.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"{homes} holds {size / 2**20:.0f} MiB: dependencies were installed?"
