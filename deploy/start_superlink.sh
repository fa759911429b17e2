#!/usr/bin/env bash
# Start a Flower 1.41 SuperLink: one port serves the Fleet API (SuperNodes), the Control
# API (`flwr run`, `flwr supernode register/ls`) and the Runtime API (its ServerApp).
# The ServerApp runs in this Python environment (fedadc must be installed here) unless
# --install-deps is given (then Flower runs `uv sync` per run).
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 [--tls CERT_DIR] [--node-auth] [--host HOST] [--port PORT] [--install-deps]
          [-- EXTRA_FLOWER_SUPERLINK_ARGS...]
  (no --tls)       insecure: plain HTTP, for a first try on a trusted network only
  --tls CERT_DIR   TLS with CERT_DIR/{ca.crt,server.pem,server.key} (make_certificates.sh)
  --node-auth      only registered SuperNodes may connect (needs --tls); register each
                   node's public key with: flwr supernode register KEY.pub CONNECTION
  --host HOST      address to listen on (default 0.0.0.0: all interfaces)
  --port PORT      port for all APIs (default 8000)
USAGE
    exit 2
}

tls_dir="" node_auth=0 host="0.0.0.0" port="8000" install_deps=0 extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tls) [[ $# -ge 2 ]] || usage; tls_dir="$2"; shift 2 ;;
        --node-auth) node_auth=1; shift ;;
        --host) [[ $# -ge 2 ]] || usage; host="$2"; shift 2 ;;
        --port) [[ $# -ge 2 ]] || usage; port="$2"; shift 2 ;;
        --install-deps) install_deps=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

cmd=(flower-superlink --host "$host" --port "$port")
if [[ -n "$tls_dir" ]]; then
    for f in ca.crt server.pem server.key; do
        [[ -f "$tls_dir/$f" ]] || { echo "error: $tls_dir/$f missing (run make_certificates.sh)" >&2; exit 1; }
    done
    cmd+=(--ssl-ca-certfile "$tls_dir/ca.crt" --ssl-certfile "$tls_dir/server.pem"
          --ssl-keyfile "$tls_dir/server.key")
else
    [[ $node_auth -eq 0 ]] || { echo "error: --node-auth needs --tls" >&2; exit 1; }
    cmd+=(--insecure)
fi
[[ $node_auth -eq 0 ]] || cmd+=(--enable-supernode-auth)
[[ $install_deps -eq 1 ]] || cmd+=(--disable-runtime-dependency-installation)
cmd+=("${extra[@]}")

echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
