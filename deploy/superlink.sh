#!/usr/bin/env bash
# Start the Flower SuperLink (Flower 1.39) on the server host.
#
#   deploy/superlink.sh [EXTRA flower-superlink ARGS...]
#
# Listens on
#   FLOWERBED_HTTP_HOST:FLOWERBED_HTTP_PORT (default 127.0.0.1:8000): Control API for
#       `flwr` and Runtime API for the ServerApp process, one HTTP server;
#       use FLOWERBED_HTTP_HOST=0.0.0.0 to run `flwr` from another machine;
#   FLOWERBED_FLEET_ADDRESS (default 0.0.0.0:9092): Fleet API (gRPC, grpc-rere) for
#       the SuperNodes.
# Security:
#   no TLS_DIR: --insecure (plain text; loopback or a trusted network only);
#   TLS_DIR=dir: TLS on all APIs with dir/ca.crt, dir/server.pem, dir/server.key;
#   TLS_DIR=dir SUPERNODE_AUTH=1: also admit only SuperNodes whose public keys were
#       registered with `flwr supernode register`.
# The ServerApp (and its MLflow logging) runs in a child process here, in this
# directory: a relative `sqlite:///mlflow.db` tracking URI lands in $PWD.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The SuperLink starts `flower-superexec` and `flwr-serverapp` by name.
if [[ -x "$repo/.venv/bin/flower-superlink" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"

if [[ -n "${TLS_DIR:-}" ]]; then
    security=(--ssl-ca-certfile "$TLS_DIR/ca.crt"
              --ssl-certfile "$TLS_DIR/server.pem"
              --ssl-keyfile "$TLS_DIR/server.key")
    if [[ "${SUPERNODE_AUTH:-0}" == 1 ]]; then
        security+=(--enable-supernode-auth)
    fi
else
    security=(--insecure)
fi

# --disable-runtime-dependency-installation: 1.39 would otherwise `uv sync` the app's
# dependencies (torch, ...) into a fresh environment per run; flowerbed and its
# dependencies are installed in this environment instead.
exec flower-superlink "${security[@]}" \
    --host "${FLOWERBED_HTTP_HOST:-127.0.0.1}" \
    --port "${FLOWERBED_HTTP_PORT:-8000}" \
    --fleet-api-type grpc-rere \
    --fleet-api-address "${FLOWERBED_FLEET_ADDRESS:-0.0.0.0:9092}" \
    --disable-runtime-dependency-installation \
    "$@"
