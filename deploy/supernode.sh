#!/usr/bin/env bash
# Start one Flower SuperNode (Flower 1.39) serving one partition, on a client host:
# TLS and SuperNode authentication unless told otherwise.
#
#   deploy/supernode.sh [--insecure] PARTITION_ID NUM_PARTITIONS [SUPERLINK_FLEET_ADDR] [EXTRA ARGS...]
#
# SUPERLINK_FLEET_ADDR: the SuperLink's Fleet API, default 127.0.0.1:9092.
# NUM_PARTITIONS must equal the run's `partition.num_clients`; each partition id
# 0..NUM_PARTITIONS-1 is served by one SuperNode (a second one is refused while the
# first is connected; a restarted one takes its partition back).
# Secure by default, from $FLOWERBED_CERTS (default deploy/certs, made by deploy/certs.sh):
#   ROOT_CERT  the CA that signed the SuperLink's certificate (default ca.crt);
#   AUTH_KEY   this SuperNode's private key, its public half registered on the SuperLink
#              with `flwr supernode register` (default supernode-PARTITION_ID).
# --insecure: plain text, no key (a warning says so). Before Flower starts, a TLS
# handshake checks that the SuperLink speaks what this node will (Flower itself would
# retry a plaintext node against a TLS SuperLink forever): a mismatch exits 2 at once.
# Environment:
#   FLOWERBED_NODE_PORT  the SuperNode's own Runtime API (HTTP, 127.0.0.1 only),
#                        default 9094 + PARTITION_ID (distinct per node on one host);
#   FLWR_HOME            where the SuperNode unpacks apps, default ~/.flwr/supernode-ID;
#   DATA_ROOT            optional node-config `data-root` (datasets directory);
#   FLOWERBED_CLIENTAPP  warm (default): the SuperNode runs with --isolation process and
#                        one long-lived flowerbed ClientApp worker (python -m
#                        flowerbed.deploy.clientapp_worker) serves its messages, restarted
#                        if it exits; fresh: Flower's default, a new flwr-clientapp process
#                        per message (imports and data rebuilt each time);
#   FLOWERBED_FAST_POLL  1 (default): the SuperNode's fixed 3 s / 0.5 s waits shortened
#                        while it is busy (python -m flowerbed.deploy.fast_supernode); 0: off;
#   TRUSTED_ENTITIES     a YAML file of trusted publishers' keys (--trusted-entities): the
#                        node then runs only apps those publishers signed (Flower Hub
#                        apps); every unsigned app, `flwr run .` included, is refused.
set -euo pipefail

insecure=0
if [[ "${1:-}" == "--insecure" ]]; then
    insecure=1
    shift
fi
if [[ $# -lt 2 ]]; then
    echo "usage: $0 [--insecure] PARTITION_ID NUM_PARTITIONS [SUPERLINK_FLEET_ADDR] [EXTRA ARGS...]" >&2
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
certs="${FLOWERBED_CERTS:-$repo/deploy/certs}"

node_config="partition-id=$partition_id num-partitions=$num_partitions"
if [[ -n "${DATA_ROOT:-}" ]]; then
    node_config+=" data-root=\"$DATA_ROOT\""
fi

if (( insecure )); then
    echo "supernode.sh: WARNING: --insecure: no TLS, no authentication; the models cross the network in plain text" >&2
    security=(--insecure)
    probe=(plaintext)
else
    root_cert="${ROOT_CERT:-$certs/ca.crt}" auth_key="${AUTH_KEY:-$certs/supernode-$partition_id}"
    for file in "$root_cert" "$auth_key"; do
        if [[ ! -f "$file" ]]; then
            echo "supernode.sh: $file: not found; run deploy/certs.sh and copy ca.crt and supernode-$partition_id" \
                 "here (or set ROOT_CERT / AUTH_KEY, or pass --insecure)" >&2
            exit 2
        fi
    done
    security=(--root-certificates "$root_cert" --auth-supernode-private-key "$auth_key")
    probe=(tls "$root_cert")
fi
if [[ -n "${TRUSTED_ENTITIES:-}" ]]; then
    security+=(--trusted-entities "$TRUSTED_ENTITIES")
fi

# Exit 2: the SuperLink speaks the other protocol (or has a certificate the CA did not
# sign); 1: nothing listens yet, which Flower's retries cover.
code=0
python -m flowerbed.deploy.probe "$superlink" "${probe[@]}" || code=$?
if (( code == 2 )); then
    exit 2
fi

node_port="${FLOWERBED_NODE_PORT:-$((9094 + partition_id))}"
isolation=()
if [[ "${FLOWERBED_CLIENTAPP:-warm}" == warm ]]; then
    isolation=(--isolation process)
fi
if [[ "${FLOWERBED_FAST_POLL:-1}" == 1 ]]; then
    launcher=(python -m flowerbed.deploy.fast_supernode)
else
    launcher=(flower-supernode)
fi
if (( ${#isolation[@]} == 0 )); then
    exec "${launcher[@]}" "${security[@]}" --grpc-rere --superlink "$superlink" \
        --host 127.0.0.1 --port "$node_port" --node-config "$node_config" "$@"
fi

# The SuperNode, and the worker that runs its ClientApp messages in one warm process
# (restarted if it ever exits); both end with this script.
"${launcher[@]}" "${security[@]}" "${isolation[@]}" --grpc-rere --superlink "$superlink" \
    --host 127.0.0.1 --port "$node_port" --node-config "$node_config" "$@" &
node_pid=$!
(
    while kill -0 "$node_pid" 2>/dev/null; do
        python -m flowerbed.deploy.clientapp_worker --runtime-api-address "127.0.0.1:$node_port" || true
        sleep 1
    done
) &
worker_pid=$!
trap 'kill "$node_pid" 2>/dev/null; pkill -P "$worker_pid" 2>/dev/null; kill "$worker_pid" 2>/dev/null' EXIT INT TERM
code=0
wait "$node_pid" || code=$?
exit "$code"
