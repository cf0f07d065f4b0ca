"""``flower-supernode``, with its fixed waits shortened while it is busy.

Flower 1.39's SuperNode sleeps 3 s after every Fleet pull that brought nothing and
0.5 s between looks for its ClientApp's reply (literals in
``flwr.supernode.start_client_internal``; no flag sets them), and retries a message's
objects that have not arrived yet after 1 s, then 2 s. At small scale these waits are
most of a round (bench/grpc_round.py). This launcher runs the same SuperNode with
those waits at ``FLOWERBED_NODE_POLL_S`` (default 0.05 s) for ``FLOWERBED_NODE_BUSY_S``
(default 60 s) after each reply it sent, and Flower's own 3 s when idle::

    python -m flowerbed.deploy.fast_supernode [flower-supernode ARGS...]

It swaps module globals of one Flower release: on any other it says so and runs the
plain SuperNode. ``deploy/supernode.sh`` uses it unless ``FLOWERBED_FAST_POLL=0``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import types

FLOWER_SERIES = "1.39."


def speed_up(module, poll_s: float, busy_s: float) -> bool:
    """Patch ``module`` (``flwr.supernode.start_client_internal``); False if it is not
    the module this was written against."""
    if not all(hasattr(module, name) for name in ("time", "_push_messages", "pull_objects")):
        return False
    last_reply = [time.monotonic()]
    push = module._push_messages

    def push_and_note(*args, **kwargs):
        try:
            return push(*args, **kwargs)
        finally:
            last_reply[0] = time.monotonic()

    def sleep(seconds: float) -> None:
        idle = time.monotonic() - last_reply[0] > busy_s
        time.sleep(seconds if idle and seconds >= 3 else min(seconds, poll_s))

    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    clock.sleep = sleep
    module.time = clock
    module._push_messages = push_and_note
    module.pull_objects = functools.partial(module.pull_objects, initial_backoff=0.01, backoff_cap=0.5)
    return True


def main() -> None:
    import flwr
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if flwr.__version__.startswith(FLOWER_SERIES):
        import flwr.supernode.start_client_internal as node

        patched = speed_up(node, float(os.environ.get("FLOWERBED_NODE_POLL_S", "0.05")),
                           float(os.environ.get("FLOWERBED_NODE_BUSY_S", "60")))
    else:
        patched = False
    if not patched:
        print(f"fast_supernode: Flower {flwr.__version__} is not the {FLOWER_SERIES}x this was written for: "
              "running the plain SuperNode", file=sys.stderr)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
