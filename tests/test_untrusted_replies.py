"""Untrusted replies: a client that sends NaN, a wrong shape, a wrong dtype, an oversized
reply or a negative weight is rejected before aggregation, counted with its reason, and
the round goes on with the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from inprocess import NODE_ID_BASE, InProcessGrid
from mlflow.tracking import MlflowClient

from flowerbed.client.app import build_client_app
from flowerbed.server.app import run_server
from flowerbed.server.replies import odd_names, reply_problem
from flowerbed.sims.config import load_scenario

REPO = Path(__file__).resolve().parents[1]
NUM_CLIENTS = 10


def _corrupt(reply: Message, how: str) -> Message:
    """``reply`` with its arrays spoiled as ``how`` says."""
    content = reply.content
    key = next(iter(content.array_records))
    arrays = {name: array.numpy().copy() for name, array in content[key].items()}
    first = next(iter(arrays))
    if how == "nan":
        arrays[first].flat[0] = np.nan
    elif how == "shape":
        arrays[first] = np.zeros(1, dtype=arrays[first].dtype)
    elif how == "scaled":  # finite, so not rejected: what robust aggregation is for
        arrays = {name: value * 1e6 for name, value in arrays.items()}
    elif how == "oversized":
        arrays["padding"] = np.zeros(2**20, dtype=np.float32)  # 4 MiB beside the model
    content[key] = ArrayRecord({name: Array(value) for name, value in arrays.items()})
    return reply


class BadClients:
    """The real ClientApp, with some partitions' train replies spoiled; keeps the good
    train replies and the arrays each train message carried, per round."""

    def __init__(self, app, spoil: dict[int, str]) -> None:
        self.app, self.spoil = app, spoil
        self.rounds_spoiled: set[int] | None = None  # None: every round
        self.good: dict[int, list[tuple[dict[str, np.ndarray], float]]] = {}
        self.received: dict[int, dict[str, np.ndarray]] = {}
        self.replied: dict[int, list[dict[str, np.ndarray]]] = {}  # every train reply, spoiled or not

    def __call__(self, message: Message, context) -> Message:
        reply = self.app(message, context)
        if message.metadata.message_type != MessageType.TRAIN:
            return reply
        round_ = int(message.content["config"]["server-round"])
        self.received[round_] = {k: a.numpy() for k, a in message.content["arrays"].items()}
        partition = message.metadata.dst_node_id - NODE_ID_BASE
        if partition in self.spoil and (self.rounds_spoiled is None or round_ in self.rounds_spoiled):
            reply = _corrupt(reply, self.spoil[partition])
            self.replied.setdefault(round_, []).append({k: a.numpy() for k, a in reply.content["arrays"].items()})
            return reply
        self.replied.setdefault(round_, []).append({k: a.numpy() for k, a in reply.content["arrays"].items()})
        metrics = reply.content["metrics"]
        self.good.setdefault(round_, []).append(
            ({k: a.numpy() for k, a in reply.content["arrays"].items()}, float(metrics["num-examples"])))
        return reply


@pytest.fixture()
def bad_run(tmp_path):
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", [
        "rounds=2", f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'", "sampling.max_reply_mb=1.0"])
    clients = BadClients(build_client_app(scenario), {0: "nan", 1: "nan", 2: "shape", 3: "oversized"})
    summary = run_server(InProcessGrid(clients, NUM_CLIENTS), scenario, progress=None)
    return scenario, clients, summary


def test_bad_replies_are_rejected_and_the_rest_aggregated(bad_run):
    scenario, clients, summary = bad_run
    for round_ in (1, 2):
        metrics = summary.history[round_]
        assert (metrics["clients_rejected"], metrics["clients_ok"], metrics["clients_failed"]) == (4, 6, 0)
        assert np.isfinite(metrics["global_loss"])
    # The global model after round 1 (what round 2's train messages carry) is the
    # num-examples-weighted mean of the 6 good replies of round 1.
    good = clients.good[1]
    assert len(good) == 6
    weights = np.array([w for _, w in good])
    for name, sent in clients.received[2].items():
        expected = np.average(np.stack([arrays[name] for arrays, _ in good]), axis=0, weights=weights)
        np.testing.assert_allclose(sent, expected, rtol=1e-5, atol=1e-6)


def test_each_rejection_is_logged_with_its_client_and_reason(bad_run, tmp_path):
    scenario, _, summary = bad_run
    client = MlflowClient(scenario.mlflow.tracking_uri)
    path = client.download_artifacts(summary.run_id, "rejected/round_001.json", str(tmp_path))
    reasons = json.loads(Path(path).read_text())["train"]
    assert sorted(reasons) == ["0", "1", "2", "3"]
    assert "not finite" in reasons["0"] and "sent as" in reasons["2"] and "max_reply_mb" in reasons["3"]


def _exchange(reply_arrays: dict[str, np.ndarray], weight: float = 10.0) -> tuple[Message, Message]:
    sent = Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.ones((2, 3), dtype=np.float32))})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)
    reply = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in reply_arrays.items()}), "metrics": MetricRecord({"num-examples": weight})}),
                    reply_to=sent)
    return sent, reply


@pytest.mark.parametrize("arrays, weight, problem", [
    ({"w": np.ones((2, 3), np.float16)}, 10.0, "sent as float32"),
    ({"w": np.full((2, 3), np.inf, np.float32)}, 10.0, "not finite"),
    ({"w": np.ones((3, 2), np.float32)}, 10.0, "sent as float32[2, 3]"),
    ({"w": np.ones((2, 3), np.float32), "v": np.ones(1, np.float32)}, 10.0, "not sent ['v']"),
    ({"w": np.ones((2, 3), np.float32)}, -5.0, "num-examples = -5"),
    ({"w": np.ones((2, 3), np.float32)}, float("nan"), "num-examples = nan"),
])
def test_reply_problem_names_what_is_wrong(arrays, weight, problem):
    sent, reply = _exchange(arrays, weight)
    assert problem in reply_problem(sent, reply, max_bytes=1 << 30)


def test_a_reply_that_lacks_what_the_others_carry_is_odd():
    replies = [_exchange(arrays)[1] for arrays in (
        {"w": np.ones((2, 3), np.float32)}, {}, {"w": np.ones((2, 3), np.float32)})]
    assert odd_names(replies) == {1: "arrays 'arrays': missing ['w'], unlike the other replies"}
    # A client may keep arrays (FedPer's head): all replies without it are not odd.
    assert odd_names([_exchange({})[1]] * 2) == {}


def test_a_reply_like_the_message_passes():
    sent, reply = _exchange({"w": np.full((2, 3), 0.5, np.float32)})
    assert reply_problem(sent, reply, max_bytes=1 << 30) is None
    assert "max_reply_mb" in reply_problem(sent, reply, max_bytes=8)


def test_a_batchnorm_counter_averaged_into_a_float_comes_back_as_its_integer(tmp_path):
    """Flower's FedAvg averages BatchNorm's int64 ``num_batches_tracked`` into a float64;
    the client's model holds it as int64 again. Those honest replies pass (they were
    once all rejected from round 2 on, failing every BatchNorm run)."""
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", [
        "rounds=2", "model.name='mlp_bn'", "dataset.name='fashion_mnist'", "client.local_epochs=1",
        f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'"])
    clients = BadClients(build_client_app(scenario), {})
    summary = run_server(InProcessGrid(clients, NUM_CLIENTS), scenario, progress=None)
    counters = [name for name in clients.received[2] if name.endswith("num_batches_tracked")]
    assert counters and all(clients.received[2][name].dtype == np.float64 for name in counters)
    assert [summary.history[r]["clients_ok"] for r in (1, 2)] == [NUM_CLIENTS, NUM_CLIENTS]
    assert summary.history[2]["clients_rejected"] == 0


def test_an_integer_array_may_answer_a_float_one_but_not_the_reverse():
    sent = Message(RecordDict({"arrays": ArrayRecord({"n": Array(np.ones(1, dtype=np.float64))})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)
    for dtype, ok in ((np.int64, True), (np.float64, True), (np.float32, False)):
        reply = Message(RecordDict({"arrays": ArrayRecord({"n": Array(np.ones(1, dtype=dtype))})}), reply_to=sent)
        assert (reply_problem(sent, reply, max_bytes=1 << 30) is None) is ok


def test_fedmedian_by_name_takes_the_coordinate_wise_median_one_huge_update_cannot_move(tmp_path):
    """Flower's FedMedian, selected by name: a finite but x1e6 update passes the reply
    checks, and the global model is the median of all replies, as if it were not there."""
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", [
        "rounds=2", "strategy.name='fedmedian'", f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'"])
    clients = BadClients(build_client_app(scenario), {0: "scaled"})
    summary = run_server(InProcessGrid(clients, NUM_CLIENTS), scenario, progress=None)
    assert summary.history[1]["clients_ok"] == NUM_CLIENTS
    replies = clients.replied[1]
    for name, sent in clients.received[2].items():
        np.testing.assert_allclose(sent, np.median(np.stack([r[name] for r in replies]), axis=0), rtol=1e-6)
        assert np.abs(sent).max() < 1e3  # no trace of the x1e6 update
