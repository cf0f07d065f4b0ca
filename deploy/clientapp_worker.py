"""A warm ClientApp process for a SuperNode started with ``--isolation process``.

Flower 1.39's SuperNode runs every message in a new ``flwr-clientapp`` process (its
default ``subprocess`` isolation): each one imports torch and rebuilds the client's
data and model, 3-5 CPU-seconds for a message whose work takes milliseconds. With
``--isolation process`` the SuperNode leaves running ClientApps to another process,
which claims each task on the SuperNode's Runtime API (Flower's own protocol: what its
``flower-superexec`` does before it spawns ``flwr-clientapp``). This worker claims the
tasks itself and runs them in one long-lived process, so the app, its imports and
flowerbed's caches (the partition's data, the model) are built once::

    flower-supernode --isolation process --port 9094 ...
    python -m flowerbed.deploy.clientapp_worker --runtime-api-address 127.0.0.1:9094

Per task it does what ``flwr-clientapp`` does (``flwr.supernode.runtime.run_clientapp``):
pull the task's input (message, Context, FAB), run the app, push the reply and the
Context back, with the task's heartbeat running. The node's ``Context.state`` stays the
SuperNode's, sent with every task, exactly as with fresh processes. A ClientApp that
raises answers with an error reply, as ``flwr-clientapp`` would. ``deploy/supernode.sh``
starts and restarts it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import flwr
from flwr.app import Error, Message
from flwr.cli.install import install_from_fab
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import (AcquireTaskRequest, PullAppMessagesRequest, PullTaskInputRequest,
                                    SendTaskHeartbeatRequest)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (make_confirm_message_received_fn_protobuf,
                                                                 make_pull_object_fn_protobuf)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

LOG = logging.getLogger("flowerbed.worker")
#: How long a task's message objects may take to arrive at the SuperNode. Past it the
#: task fails (its run died with a SuperLink crash, say) and the worker takes the next
#: one, where Flower's retries would hold it for hours (500 tries per object).
OBJECT_WAIT_S = 60.0
#: The Flower release whose Runtime API this worker speaks.
FLOWER_SERIES = "1.39."


def runtime_client(address: str, component: str, token: str | None = None) -> RuntimeHttpClient:
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker())


def pull_task_input(client: RuntimeHttpClient):
    """The task's message, Context, Run and FAB (``run_clientapp.pull_task_input``). The
    SuperNode may hand out a task before it holds all of the message's objects: retry
    those after 10 ms, not Flower's 1 s first backoff, for ``OBJECT_WAIT_S`` at most."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = res.task_id, res.run.run_id, res.context.node_id
    context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("the SuperNode gave the task no message")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=0.01, backoff_cap=0.5, max_time=OBJECT_WAIT_S)
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


class Worker:
    """Claims the SuperNode's ClientApp tasks and runs them here, one at a time."""

    def __init__(self, address: str, poll_s: float) -> None:
        self.address = address
        self.poll_s = poll_s
        self.apps: dict[str, object] = {}  # FAB hash -> its loaded ClientApp
        self._load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)

    def app_of(self, run, fab):
        if fab.hash_str not in self.apps:  # once per app version, not per message
            install_from_fab(fab.content, skip_prompt=True)
            self.apps[fab.hash_str] = self._load(run.fab_id, run.fab_version, fab.hash_str)
        return self.apps[fab.hash_str]

    def run_task(self, token: str) -> None:
        client = runtime_client(self.address, "flwr-clientapp", token)

        def beat() -> bool:  # False retries; never a signal to this process
            try:
                return bool(client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried by the sender
                return False

        heartbeat = HeartbeatSender(beat)
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, run, fab = pull_task_input(client)
            reply = self.app_of(run, fab)(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as err:  # noqa: BLE001 - the server gets it as an error reply
            LOG.exception("ClientApp raised an exception")
            details = f"{type(err)}:<'{err}'>"
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            finally:
                push_task_output(client, context, status, details)
                heartbeat.stop()
                client.close()

    def serve(self) -> None:
        claims = runtime_client(self.address, "SuperExec")
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        LOG.warning("flowerbed ClientApp worker: serving the SuperNode at %s", self.address)
        while True:
            res = claims.AcquireTask(request)
            if res.HasField("task") and res.token:
                self.run_task(res.token)
            else:
                time.sleep(self.poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's --host:--port")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between claims while idle")
    args = parser.parse_args(argv)
    if not flwr.__version__.startswith(FLOWER_SERIES):
        print(f"clientapp_worker: speaks Flower {FLOWER_SERIES}x's Runtime API, not {flwr.__version__}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    Worker(args.runtime_api_address, args.poll).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
