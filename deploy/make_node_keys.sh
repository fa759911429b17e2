#!/usr/bin/env bash
# Generate one SuperNode authentication key pair per node, in the format Flower 1.41
# needs: an OpenSSH ECDSA P-384 private key (flower-supernode --auth-supernode-private-key)
# and its public key (flwr supernode register KEY.pub CONNECTION, on the SuperLink side).
# Outputs in OUTDIR (default ./keys): node_0, node_0.pub, node_1, node_1.pub, ...
set -euo pipefail

usage() {
    echo "usage: $0 NUM_NODES [OUTDIR]   e.g. $0 2 ./keys" >&2
    exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]] || usage
count="$1"
outdir="${2:-./keys}"
command -v ssh-keygen >/dev/null || { echo "error: ssh-keygen not found (openssh-client)" >&2; exit 1; }

mkdir -p "$outdir"
for ((i = 0; i < count; i++)); do
    key="${outdir}/node_${i}"
    if [[ -e "$key" ]]; then
        echo "keep existing ${key}" >&2
        continue
    fi
    echo "+ ssh-keygen -t ecdsa -b 384 -N '' -C '' -f ${key}" >&2
    ssh-keygen -q -t ecdsa -b 384 -N '' -C '' -f "$key"
done
echo "register each public key with the SuperLink (it must run with --enable-supernode-auth):" >&2
for ((i = 0; i < count; i++)); do
    echo "  flwr supernode register ${outdir}/node_${i}.pub CONNECTION" >&2
done
