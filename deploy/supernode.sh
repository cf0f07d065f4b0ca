#!/usr/bin/env bash
# Start one Flower SuperNode (Flower 1.39) serving one partition, on a client host.
#
#   deploy/supernode.sh PARTITION_ID NUM_PARTITIONS [SUPERLINK_FLEET_ADDR] [EXTRA ARGS...]
#
# SUPERLINK_FLEET_ADDR: the SuperLink's Fleet API, default 127.0.0.1:9092.
# NUM_PARTITIONS must equal the run's `partition.num_clients`, and partition ids
# 0..NUM_PARTITIONS-1 must each be served by exactly one SuperNode.
# Environment:
#   FLOWERBED_NODE_PORT  the SuperNode's own Runtime API (HTTP, 127.0.0.1 only),
#                        default 9094 + PARTITION_ID (distinct per node on one host);
#   FLWR_HOME            where the SuperNode unpacks apps, default ~/.flwr/supernode-ID;
#   DATA_ROOT            optional node-config `data-root` (datasets directory);
#   ROOT_CERT            CA certificate (PEM) to verify the SuperLink's TLS certificate;
#                        without it: --insecure;
#   AUTH_KEY             the SuperNode's private key (OpenSSH EC key) for SuperNode
#                        authentication; needs ROOT_CERT.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 PARTITION_ID NUM_PARTITIONS [SUPERLINK_FLEET_ADDR] [EXTRA ARGS...]" >&2
    exit 2
fi
partition_id="$1" num_partitions="$2" superlink="${3:-127.0.0.1:9092}"
shift $(( $# < 3 ? $# : 3 ))

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The SuperNode starts `flower-superexec` and `flwr-clientapp` by name.
if [[ -x "$repo/.venv/bin/flower-supernode" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_HOME="${FLWR_HOME:-$HOME/.flwr/supernode-$partition_id}"

node_config="partition-id=$partition_id num-partitions=$num_partitions"
if [[ -n "${DATA_ROOT:-}" ]]; then
    node_config+=" data-root=\"$DATA_ROOT\""
fi

if [[ -n "${ROOT_CERT:-}" ]]; then
    security=(--root-certificates "$ROOT_CERT")
    if [[ -n "${AUTH_KEY:-}" ]]; then
        security+=(--auth-supernode-private-key "$AUTH_KEY")
    fi
else
    security=(--insecure)
fi

exec flower-supernode "${security[@]}" --grpc-rere \
    --superlink "$superlink" \
    --host 127.0.0.1 --port "${FLOWERBED_NODE_PORT:-$((9094 + partition_id))}" \
    --node-config "$node_config" \
    "$@"
