"""A simulated client's kept state (``Context.state``: personal heads, masks, optimizer
moments) written beside the server's checkpoint, so that a resumed run is the same run.

:class:`ClientStates` is a Flower client mod. Around every message it handles it:

1. the first time it sees a node in this process's run, when the run resumes after
   round ``c``, loads that partition's state as it was at the end of round ``c`` (its
   newest file of a round <= c; files of later rounds, left by the interrupted
   attempt, are deleted);
2. after the handler, writes the node's ``Context.state`` (Flower's own protobuf form
   of a RecordDict) as ``clients/<partition>/<round>.rd``, write-then-rename.

A client trains in some rounds only, so its newest file may be old. The server
checkpoints after every ``every`` rounds; while round ``r`` runs, the newest server
checkpoint is of round ``c = every * floor((r - 1) / every)``, so a client keeps its
newest file of a round <= c and every later one, and deletes the rest.

Over gRPC a SuperNode keeps its state in memory only: a restarted SuperNode starts empty
(``deploy/README.md`` says what that loses per strategy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

#: Marks a Context whose state this process has already restored (or found new).
RESTORED = "flowerbed.checkpoint"
SUFFIX = ".rd"


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, all or nothing: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def round_of(message: Message) -> int:
    config = message.content.config_records.get("config")
    return int(config.get("server-round", 0)) if config is not None else 0


@dataclass(frozen=True)
class ClientStates:
    """The client states of one run under ``folder``; ``every`` as the server's
    ``checkpoint.every``; ``resume_round`` > 0: this run continues after that round."""

    folder: Path
    every: int
    resume_round: int = 0

    def files(self, partition: int) -> dict[int, Path]:
        """Round -> the partition's state file of that round."""
        where = self.folder / "clients" / str(partition)
        if not where.is_dir():
            return {}
        return {int(p.name.removesuffix(SUFFIX)): p for p in where.iterdir() if p.name.endswith(SUFFIX)}

    def restore(self, context: Context, partition: int) -> None:
        if RESTORED in context.state.config_records:
            return
        if self.resume_round:
            files = self.files(partition)
            for stale in [r for r in files if r > self.resume_round]:
                files.pop(stale).unlink(missing_ok=True)
            if files:
                proto = RecordDictProto()
                proto.ParseFromString(files[max(files)].read_bytes())
                for name, record in recorddict_from_proto(proto).items():
                    context.state[name] = record
        context.state[RESTORED] = ConfigRecord({"resumed-after": self.resume_round})

    def save(self, context: Context, partition: int, server_round: int) -> None:
        # The setup messages of a resumed run (round 0) must not overwrite the files of
        # the rounds it continues from.
        if self.resume_round and server_round <= self.resume_round:
            return
        if not any(name != RESTORED for name in context.state):
            return  # nothing kept
        state = RecordDict({name: record for name, record in context.state.items() if name != RESTORED})
        write_atomically(self.folder / "clients" / str(partition) / f"{server_round:06d}{SUFFIX}",
                         recorddict_to_proto(state).SerializeToString())
        checkpointed = self.every * ((server_round - 1) // self.every) if server_round > 0 else 0
        files = self.files(partition)
        kept_old = max((r for r in files if r <= checkpointed), default=None)
        for r, path in files.items():
            if r <= checkpointed and r != kept_old:
                path.unlink(missing_ok=True)

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """The mod: restore, handle, save."""
        partition = int(context.node_config["partition-id"])
        self.restore(context, partition)
        reply = call_next(message, context)
        if not reply.has_error():
            self.save(context, partition, round_of(message))
        return reply
