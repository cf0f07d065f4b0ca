#!/usr/bin/env bash
# Start the Flower SuperLink (Flower 1.39) on the server host: TLS, SuperNode
# authentication and a state database unless told otherwise.
#
#   deploy/superlink.sh [--insecure] [EXTRA flower-superlink ARGS...]
#
# Secure by default: TLS on every API with $FLOWERBED_CERTS/{ca.crt,server.pem,server.key}
# (default deploy/certs, made by deploy/certs.sh) and only SuperNodes whose public keys
# were registered (`flwr supernode register KEY.pub CONNECTION`) may connect.
# --insecure: plain text and no SuperNode authentication (a warning says so).
#
# Listens on
#   FLOWERBED_HTTP_HOST:FLOWERBED_HTTP_PORT (default 127.0.0.1:8000): the Control API for
#       `flwr` and the Runtime API for the ServerApp process, one HTTP server. Flower
#       1.39 has no user authentication on it: whoever reaches it can submit an app
#       that then runs on every SuperNode, so keep it on loopback and reach it through
#       `ssh -L 8000:127.0.0.1:8000 superlink-host` (a warning says so otherwise);
#   FLOWERBED_FLEET_ADDRESS (default 127.0.0.1:9092): the Fleet API (gRPC) for the
#       SuperNodes; 0.0.0.0:9092 (or this host's address) for SuperNodes on other hosts.
# State: FLOWERBED_STATE_DB (default ./superlink-state.db): runs, nodes, registered keys
#   and messages survive a SuperLink restart, and connected SuperNodes carry on; "" keeps
#   it in memory (then every SuperNode exits when the SuperLink restarts).
# ServerApps: the SuperLink runs with --isolation process, and a `flower-superexec`
#   started beside it (not as its child) starts each run's ServerApp: a SuperLink that
#   crashes and is restarted with this script (within about a minute) finds its runs'
#   ServerApps still there, and they carry on. A SuperExec left running by an earlier
#   start (./superexec.pid) is kept. The ServerApp (and its MLflow logging) runs in this
#   directory: a relative `sqlite:///mlflow.db` tracking URI lands in $PWD.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The SuperLink starts `flower-superexec` and `flwr-serverapp` by name.
if [[ -x "$repo/.venv/bin/flower-superlink" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"

insecure=0
if [[ "${1:-}" == "--insecure" ]]; then
    insecure=1
    shift
fi
certs="${FLOWERBED_CERTS:-$repo/deploy/certs}"
http_host="${FLOWERBED_HTTP_HOST:-127.0.0.1}"

if (( insecure )); then
    cat >&2 <<WARN
superlink.sh: WARNING: --insecure: no TLS and no SuperNode authentication. Anyone who
  reaches the Fleet API can join as a SuperNode and read the models; use it on loopback
  or a network you trust only. deploy/certs.sh makes what a secure start needs.
WARN
    security=(--insecure)
    superexec_security=(--insecure)
else
    for file in ca.crt server.pem server.key; do
        if [[ ! -f "$certs/$file" ]]; then
            echo "superlink.sh: $certs/$file: not found; run deploy/certs.sh (or pass --insecure, on a trusted network only)" >&2
            exit 2
        fi
    done
    security=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem"
              --ssl-keyfile "$certs/server.key" --enable-supernode-auth)
    superexec_security=(--root-certificates "$certs/ca.crt")
fi
case "$http_host" in
    127.*|localhost|::1) ;;
    *) echo "superlink.sh: WARNING: the Control API listens on $http_host: Flower 1.39 authenticates no one there," \
            "so anyone who reaches it can run code on every SuperNode; prefer 127.0.0.1 and an ssh tunnel" >&2 ;;
esac
state=()
if [[ -n "${FLOWERBED_STATE_DB-./superlink-state.db}" ]]; then
    state=(--database "${FLOWERBED_STATE_DB-./superlink-state.db}")
fi

http_port="${FLOWERBED_HTTP_PORT:-8000}"
case "$http_host" in 0.0.0.0|::) runtime_host=127.0.0.1 ;; *) runtime_host="$http_host" ;; esac
pidfile="$PWD/superexec.pid"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
        && grep -q flower-superexec "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null; then
    echo "superlink.sh: keeping the SuperExec already running (pid $(cat "$pidfile")) and its ServerApps" >&2
else
    setsid flower-superexec "${superexec_security[@]}" --runtime-api-address "$runtime_host:$http_port" \
        >> superexec.log 2>&1 < /dev/null &
    echo $! > "$pidfile"
fi

# --disable-runtime-dependency-installation: 1.39 would otherwise `uv sync` the app's
# dependencies (torch, ...) into a fresh environment per run; flowerbed and its
# dependencies are installed in this environment instead.
exec flower-superlink "${security[@]}" "${state[@]}" --isolation process \
    --host "$http_host" \
    --port "$http_port" \
    --fleet-api-type grpc-rere \
    --fleet-api-address "${FLOWERBED_FLEET_ADDRESS:-127.0.0.1:9092}" \
    --disable-runtime-dependency-installation \
    "$@"
