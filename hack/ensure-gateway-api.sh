#!/usr/bin/env bash
# The Gateway API's standard-channel CRDs, from its published Go module (sigs.k8s.io/gateway-api ships them in
# config/crd/standard), copied once into $NIMIFY_CACHE_DIR/gateway-api-<version>/ and kept there.
# Prints that directory on the last line of stdout. Tests install these CRDs to exercise spec.expose.httpRoute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
dest="$cache/gateway-api-$GATEWAY_API_VERSION"
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"; exit 0
fi
command -v go >/dev/null || { echo "ensure-gateway-api: 'go' is not on PATH" >&2; exit 1; }
mkdir -p "$cache/locks"
exec {lockfd}>"$cache/locks/gateway-api-$GATEWAY_API_VERSION.lock"
flock "$lockfd"
if [[ ! -f "$dest/.complete" ]]; then
  echo "[ensure-gateway-api] downloading sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" >&2
  moddir="$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
    | python3 -c 'import json,sys; info = json.load(sys.stdin); print(info.get("Dir") or sys.exit(info.get("Error")))')"
  tmp="$(mktemp -d "$cache/.gateway-api-$GATEWAY_API_VERSION.XXXXXX")"
  cp "$moddir"/config/crd/standard/*.yaml "$tmp/"
  chmod u+w "$tmp"/*.yaml
  touch "$tmp/.complete"
  rm -rf "$dest"; mv "$tmp" "$dest"
fi
echo "$dest"
