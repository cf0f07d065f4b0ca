"""A failed client is one log line naming it and its exception, not Flower's traceback."""

from __future__ import annotations

import logging

from flwr.app import Error, Message, MessageType, MetricRecord, RecordDict
from inprocess import NODE_ID_BASE, InProcessGrid

from flowerbed.server.cli import no_client_tracebacks
from flowerbed.server.grid import RosterGrid, one_line

# What Flower's simulation engine puts in the error reply of a ClientApp that raised.
REASON = ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. "
          "Message: Traceback (most recent call last):\n  File \"app.py\", line 3, in train\n    boom()\n"
          "ValueError: boom on partition 1\n'>")


def answer(message: Message, context) -> Message:
    """Partition 1 fails; the others reply as a roster query and a train message expect."""
    if context.node_config["partition-id"] == 1 and message.metadata.message_type == MessageType.TRAIN:
        return Message(Error(2, REASON), reply_to=message)
    metrics = {"partition-id": context.node_config["partition-id"], "num-examples": 10}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def test_the_exception_line_is_what_remains_of_a_reason():
    assert one_line(REASON) == "ValueError: boom on partition 1"
    # The Ray backend's form: the ClientApp's exception message only.
    ray = "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. " \
          "Message: CUDA out of memory'>"
    assert one_line(ray) == "CUDA out of memory"
    assert one_line("") == "no reason given"


def test_a_failed_reply_is_one_log_line_naming_its_client(caplog):
    grid = RosterGrid(InProcessGrid(answer, 3))
    grid.build_roster(3)
    messages = [Message(RecordDict(), dst_node_id=NODE_ID_BASE + i, message_type=MessageType.TRAIN) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="flowerbed"):
        grid.send_and_receive(messages)
    assert [r.getMessage() for r in caplog.records] == ["client 1 failed (train): ValueError: boom on partition 1"]
    assert grid.take_traffic().failed == {"train": 1}


def test_flowers_client_tracebacks_are_filtered_out():
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("flwr", logging.ERROR, "vce_api.py", 1, msg, None, None)

    assert not no_client_tracebacks(record("Traceback (most recent call last):\n  File ..."))
    assert not no_client_tracebacks(record("\nException ClientAppException occurred. Message: ..."))
    assert no_client_tracebacks(record("Simulation Runtime crashed."))
