"""A ClientApp for the engine's failure tests, importable by Ray's workers (tests/ is on
their PYTHONPATH): per message config ``fault``, partition 1 raises, partition 2's
process dies, partition 3 outlasts any timeout; every node counts its calls in its
Context state."""

from __future__ import annotations

import os
import time

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp


def build_faulty_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(message: Message, context) -> Message:
        partition = int(context.node_config["partition-id"])
        calls = int(context.state.config_records.get("calls", ConfigRecord({"n": 0}))["n"]) + 1
        context.state.config_records["calls"] = ConfigRecord({"n": calls})
        if message.content.config_records["config"]["fault"]:
            if partition == 1:
                raise ValueError(f"boom on partition {partition}")
            if partition == 2:
                os._exit(1)
            if partition == 3:
                time.sleep(120)
        metrics = MetricRecord({"partition-id": partition, "calls": calls, "pid": os.getpid()})
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    return app
