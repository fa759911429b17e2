#!/usr/bin/env bash
# Start a Flower 1.41 SuperNode for one fedadc client: it holds partition PARTITION_ID of
# NUM_PARTITIONS (NUM_PARTITIONS must equal the run's num-clients). By default it runs
# fedadc's warm runtime (`fedadc-supernode`: one long-lived ClientApp worker per SuperNode,
# shortened SuperNode waits; flwr 1.41.0 only, docs/deployment.md "Warm runtime"); with
# --stock, plain `flower-supernode` (a new ClientApp process per message). Either way the
# apps run in this Python environment (fedadc must be installed here).
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 PARTITION_ID NUM_PARTITIONS [--superlink HOST:PORT] [--tls CA_CERT]
          [--key PRIVATE_KEY] [--data-path DIR] [--port RUNTIME_PORT] [--stock]
          [-- EXTRA_ARGS...]
  --superlink HOST:PORT  the SuperLink (default 127.0.0.1:8000)
  --tls CA_CERT          verify the SuperLink with this CA certificate (ca.crt);
                         without it the connection is insecure
  --key PRIVATE_KEY      authenticate with this key (node_K from make_node_keys.sh);
                         its public key must be registered with the SuperLink
  --data-path DIR        where this device stores the run's dataset (replaces the run's
                         data.path on this node; the partition still selects its share)
  --port RUNTIME_PORT    local port of this SuperNode's ClientApp API
                         (default 9094 + PARTITION_ID, so several fit on one host)
  --stock                plain flower-supernode: no patch, a ClientApp process per message
  EXTRA_ARGS             passed on to fedadc-supernode (e.g. --poll-s 0.02) or, with
                         --stock, to flower-supernode
USAGE
    exit 2
}

[[ $# -ge 2 ]] || usage
[[ "$1" =~ ^[0-9]+$ && "$2" =~ ^[0-9]+$ ]] || usage
pid="$1" total="$2"
shift 2
[[ "$pid" -lt "$total" ]] || { echo "error: PARTITION_ID must be < NUM_PARTITIONS" >&2; exit 1; }
superlink="127.0.0.1:8000" ca="" key="" data_path="" port=$((9094 + pid)) stock="" extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --superlink) [[ $# -ge 2 ]] || usage; superlink="$2"; shift 2 ;;
        --tls) [[ $# -ge 2 ]] || usage; ca="$2"; shift 2 ;;
        --key) [[ $# -ge 2 ]] || usage; key="$2"; shift 2 ;;
        --data-path) [[ $# -ge 2 ]] || usage; data_path="$2"; shift 2 ;;
        --port) [[ $# -ge 2 ]] || usage; port="$2"; shift 2 ;;
        --stock) stock="--stock"; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

node_config="partition-id=${pid} num-partitions=${total}"
[[ -z "$data_path" ]] || node_config+=" data-path=\"${data_path}\""
cmd=(fedadc-supernode ${stock} --superlink "$superlink" --port "$port" --node-config "$node_config")
if [[ -n "$ca" ]]; then
    [[ -f "$ca" ]] || { echo "error: CA certificate $ca not found" >&2; exit 1; }
    cmd+=(--root-certificates "$ca")
else
    [[ -z "$key" ]] || { echo "error: --key needs --tls (node auth requires TLS)" >&2; exit 1; }
    cmd+=(--insecure)
fi
if [[ -n "$key" ]]; then
    [[ -f "$key" ]] || { echo "error: private key $key not found" >&2; exit 1; }
    cmd+=(--auth-supernode-private-key "$key")
fi
cmd+=("${extra[@]}")

echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
