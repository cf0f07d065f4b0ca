"""The client contract (deploy/CLIENTS.md) and node churn, in one process: flowerbed's
ServerApp logic with a ClientApp written like Flower's quickstart, flowerbed's ClientApp
under Flower's quickstart ServerApp, and nodes that leave, come back under a new id, or
claim a partition twice. The same over real SuperLink / SuperNode processes:
tests/test_grpc_operations.py."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from inprocess import NODE_ID_BASE, InProcessGrid

from flowerbed.client.app import build_client_app
from flowerbed.server.app import run_server
from flowerbed.server.contract import average_measurements
from flowerbed.server.grid import NodesMissing, RosterGrid
from flowerbed.sims.config import load_scenario
from flowerbed.sims.task import new_model

REPO = Path(__file__).resolve().parents[1]
STOCK_APP = Path(__file__).parent / "stock_flower_app"


def scenario(num_clients: int = 3, rounds: int = 3, *extra: str):
    return load_scenario(REPO / "sims" / "quickstart.toml", [
        f"rounds={rounds}", f"partition.num_clients={num_clients}", "sampling.min_clients=2",
        "client.local_epochs=1", "mlflow.experiment='contract'", *extra])


@pytest.fixture
def stockapp(monkeypatch):
    """The `stockapp` package of tests/stock_flower_app (Flower's quickstart, on digits)."""
    monkeypatch.syspath_prepend(str(STOCK_APP))
    for name in [m for m in sys.modules if m == "stockapp" or m.startswith("stockapp.")]:
        monkeypatch.delitem(sys.modules, name)
    import stockapp.client_app
    import stockapp.server_app
    import stockapp.task

    stockapp.task.partitioner = None
    return stockapp


@pytest.fixture(autouse=True)
def tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sqlite:///mlflow.db and the stock app's final_model.pt land here


class ScriptedGrid(InProcessGrid):
    """Runs ``events[(message type, r)]`` (on this grid) just before round r's messages of
    that type are delivered (after the strategy sampled the nodes)."""

    def __init__(self, *args, events=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events = dict(events or {})

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and "config" in messages[0].content.config_records:
            key = (messages[0].metadata.message_type, int(messages[0].content["config"]["server-round"]))
            if (event := self.events.pop(key, None)) is not None:
                event(self)
        return super().send_and_receive(messages, timeout=timeout)


def test_a_lost_node_is_counted_failed_and_its_partition_returns_under_a_new_node_id(caplog):
    s = scenario(3, 3, "sampling.min_available_clients=2")
    lost = NODE_ID_BASE + 1
    grid = ScriptedGrid(build_client_app(s), 3, events={
        (MessageType.TRAIN, 2): lambda g: g.leave(lost),  # sampled for round 2, then killed
        (MessageType.EVALUATE, 2): lambda g: g.join(9999, 1),  # restarted: a new node id, fresh state
    })
    with caplog.at_level(logging.WARNING, logger="flowerbed"):
        summary = run_server(grid, s, progress=None)
    rounds = summary.history
    assert [(rounds[r]["clients_ok"], rounds[r]["clients_failed"]) for r in (1, 2, 3)] == [(3, 0), (2, 1), (3, 0)]
    assert sorted(summary.client_metrics[2]["train"]) == [0, 2]
    assert sorted(summary.client_metrics[3]["train"]) == [0, 1, 2]  # under its partition again
    messages = [r.getMessage() for r in caplog.records]
    assert "client 1 (node 1001) is gone" in messages and "client 1 is back (node 9999)" in messages
    assert any(m.startswith("client 1: no train reply") for m in messages)


def test_a_node_that_dies_mid_round_is_counted_failed():
    s = scenario(3, 2)

    class DiesMidRound(ScriptedGrid):
        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            if any(m.metadata.message_type == MessageType.TRAIN for m in messages) and NODE_ID_BASE + 2 in self.contexts:
                replies = super().send_and_receive(messages, timeout=timeout)
                self.leave(NODE_ID_BASE + 2)  # its reply is lost with it
                return [r for r in replies if r.metadata.src_node_id != NODE_ID_BASE + 2]
            return super().send_and_receive(messages, timeout=timeout)

    summary = run_server(DiesMidRound(build_client_app(s), 3), s.model_copy(update={
        "sampling": s.sampling.model_copy(update={"min_available_clients": 2})}), progress=None)
    assert (summary.history[1]["clients_ok"], summary.history[1]["clients_failed"]) == (2, 1)
    assert summary.history[2]["clients_ok"] == 2 and math.isfinite(summary.history[2]["global_accuracy"])


def test_fewer_nodes_than_a_round_needs_end_the_run_after_the_wait():
    s = scenario(3, 1)
    grid = RosterGrid(InProcessGrid(build_client_app(s), 3), needed=3, wait_s=0.3)
    grid.build_roster(3)
    grid._grid.leave(NODE_ID_BASE)
    assert len(list(grid.get_node_ids())) == 2  # the wait starts
    with pytest.raises(NodesMissing, match="2 of the 3 clients a round needs stayed connected for 0 s"):
        for _ in range(100):
            grid.get_node_ids()
            time.sleep(0.02)


def test_a_second_node_claiming_a_held_partition_is_refused_until_the_holder_leaves(caplog):
    s = scenario(2, 1)
    inner = InProcessGrid(build_client_app(s), 2)
    grid = RosterGrid(inner, needed=2)
    grid.build_roster(2)
    inner.join(5000, 0)  # a duplicate of partition 0
    with caplog.at_level(logging.WARNING, logger="flowerbed"):
        assert list(grid.get_node_ids()) == [NODE_ID_BASE, NODE_ID_BASE + 1]
    assert "node 5000 claims partition 0, which node 1000 holds" in caplog.text
    inner.leave(NODE_ID_BASE)
    assert list(grid.get_node_ids()) == [5000, NODE_ID_BASE + 1] and grid.partition_of[5000] == 0


def test_a_client_written_like_flowers_quickstart_completes_a_flowerbed_fedavg_run(stockapp):
    s = scenario(2, 2)
    # Its run config is the app's: flowerbed's keys and the two the stock client reads.
    run_config = {**s.to_run_config(), "batch-size": 32, "local-epochs": 1}
    summary = run_server(InProcessGrid(stockapp.client_app.app, 2, run_config=run_config, errors_as_replies=True), s, progress=None)
    for r in (1, 2):
        m = summary.history[r]
        assert (m["clients_ok"], m["clients_failed"], m["clients_rejected"]) == (2, 0, 0)
        # eval_acc / eval_loss read as flowerbed's accuracy / loss.
        assert 0.0 <= m["personalized_accuracy"] <= 1.0 and m["personalized_loss"] > 0 and m["train_loss"] > 0
    # Kept under their node ids (no roster answer), in the order of the nodes.
    assert sorted(summary.client_metrics[2]["evaluate"]) == [NODE_ID_BASE, NODE_ID_BASE + 1]
    assert summary.history[2]["global_accuracy"] > summary.history[0]["global_accuracy"]


def test_flowerbeds_client_completes_a_run_under_flowers_quickstart_serverapp(stockapp, tmp_path):
    config = {"num-server-rounds": 2, "fraction-train": 1.0, "local-epochs": 1, "lr": 0.05, "batch-size": 32}
    grid = InProcessGrid(build_client_app(), 2, run_config=config)
    initial = {k: v.clone() for k, v in stockapp.task.Net().state_dict().items()}
    stockapp.server_app.app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    final = torch.load(tmp_path / "final_model.pt")
    assert final.keys() == initial.keys() and any(not torch.equal(final[k], initial[k]) for k in final)
    trained = [m for m in grid.delivered if m.metadata.message_type == MessageType.TRAIN]
    assert len(trained) == 4  # 2 nodes x 2 rounds, each answered with arrays (else FedAvg would fail)


def test_a_flowerbed_client_trains_with_the_servers_lr():
    s = scenario(2, 1)
    app = build_client_app()
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=s.to_run_config())
    sent = ArrayRecord(new_model(s).state_dict())

    def train(lr: float):
        message = Message(RecordDict({"arrays": sent, "config": ConfigRecord({"lr": lr, "server-round": 1})}),
                          dst_node_id=1, message_type=MessageType.TRAIN)
        message.metadata.__dict__["_message_id"] = message.object_id
        return app(message, context).content["arrays"].to_torch_state_dict()

    frozen = train(0.0)  # the server said lr = 0: nothing moves, whatever the run config says
    assert all(torch.equal(frozen[k], v) for k, v in sent.to_torch_state_dict().items())
    assert not all(torch.equal(v, frozen[k]) for k, v in train(0.05).items())


def test_only_measurements_are_averaged():
    records = [RecordDict({"metrics": MetricRecord({"num-examples": n, "partition-id": p, "train_loss": loss,
                                                    "on-gpu": 0})})
               for n, p, loss in ((10, 0, 1.0), (30, 7, 2.0))]
    assert dict(average_measurements(records, "num-examples")) == {"train_loss": 1.75}
