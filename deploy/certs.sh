#!/usr/bin/env bash
# Make everything a secure deployment needs, in one folder (default deploy/certs):
#
#   deploy/certs.sh [-o DIR] [-n NUM_SUPERNODES] [-s NAME_OR_IP]...
#
#   ca.crt, ca.key          a certificate authority (keep ca.key off the hosts);
#   server.pem, server.key  the SuperLink's certificate, for 127.0.0.1, localhost, this
#                           host's name and every -s NAME_OR_IP (the names SuperNodes
#                           and `flwr` use to reach the SuperLink);
#   supernode-I, .pub       SuperNode I's authentication key pair (OpenSSH, ECDSA P-384:
#                           what Flower 1.39 takes), I = 0..NUM_SUPERNODES-1;
#   superexec.secret        a shared secret for Flower's SuperExec (process isolation).
#
# Existing files are kept (rerun with more -n to add SuperNode keys); a certificate
# for other names needs a fresh folder. Copy to each host only what it needs: the
# SuperLink host server.pem, server.key, ca.crt; SuperNode host I ca.crt and supernode-I;
# the `flwr` machine ca.crt and the supernode-*.pub keys it registers.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/deploy/certs" nodes=2 names=()
while getopts "o:n:s:h" opt; do
    case "$opt" in
        o) out="$OPTARG" ;;
        n) nodes="$OPTARG" ;;
        s) names+=("$OPTARG") ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
[[ "$nodes" =~ ^[0-9]+$ ]] || { echo "certs.sh: -n $nodes: expected a number of SuperNodes" >&2; exit 2; }
mkdir -p "$out" && chmod 700 "$out"
cd "$out"

san="IP:127.0.0.1,DNS:localhost,DNS:$(hostname)"
for name in "${names[@]}"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

if [[ ! -f ca.crt ]]; then
    openssl req -x509 -newkey rsa:3072 -nodes -days 825 -keyout ca.key -out ca.crt \
        -subj "/CN=flowerbed-ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "certs.sh: made $out/ca.crt"
fi
if [[ ! -f server.pem ]]; then
    openssl req -newkey rsa:3072 -nodes -keyout server.key -out server.csr -subj "/CN=flowerbed-superlink" 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -out server.pem \
        -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san") 2>/dev/null
    rm -f server.csr
    echo "certs.sh: made $out/server.pem for $san"
fi
for ((i = 0; i < nodes; i++)); do
    if [[ ! -f "supernode-$i" ]]; then
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "flowerbed-supernode-$i" -f "supernode-$i"
        echo "certs.sh: made $out/supernode-$i (+ .pub: register it with \`flwr supernode register\`)"
    fi
done
if [[ ! -f superexec.secret ]]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > superexec.secret
fi
chmod 600 ./*.key ./supernode-* superexec.secret 2>/dev/null || true
chmod 644 ca.crt server.pem ./supernode-*.pub 2>/dev/null || true
openssl verify -CAfile ca.crt server.pem >/dev/null
