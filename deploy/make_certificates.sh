#!/usr/bin/env bash
# Generate a self-signed CA and a SuperLink server certificate for ADDRESS (an IP or DNS
# name), valid for that address plus localhost/127.0.0.1/::1 (the SuperLink's own
# SuperExec connects to it locally). Outputs in OUTDIR (default ./certificates):
#   ca.crt  ca.key  server.pem  server.key
# SuperLink:  --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key
# SuperNodes and `flwr` (root-certificates in ~/.flwr/config.toml) need only ca.crt.
set -euo pipefail

usage() {
    echo "usage: $0 ADDRESS [OUTDIR]   e.g. $0 192.168.1.10 ./certificates" >&2
    exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage
address="$1"
outdir="${2:-./certificates}"
days="${CERT_DAYS:-365}"
command -v openssl >/dev/null || { echo "error: openssl not found" >&2; exit 1; }

if [[ "$address" =~ ^[0-9.]+$ || "$address" == *:* ]]; then
    san="IP:${address}"
else
    san="DNS:${address}"
fi
for extra in DNS:localhost IP:127.0.0.1 IP:::1; do
    [[ ",${san}," == *",${extra},"* ]] || san="${san},${extra}"
done

mkdir -p "$outdir"
cd "$outdir"
run() { echo "+ $*" >&2; "$@"; }

run openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out ca.key
run openssl req -x509 -new -key ca.key -sha256 -days "$days" -out ca.crt -subj "/CN=fedadc-ca"
run openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out server.key
run openssl req -new -key server.key -sha256 -out server.csr -subj "/CN=${address}"
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" >server.ext
run openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out server.pem -days "$days" -sha256 -extfile server.ext
rm -f server.csr server.ext ca.srl
chmod 600 ca.key server.key
echo "certificates for ${address} (${san}) in $(pwd):" >&2
ls -1 "$(pwd)"
