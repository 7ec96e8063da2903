#!/usr/bin/env bash
# Builds the dev cluster's Gateway API implementation, Traefik proxy, from its published Go module and caches
# it outside the clone:
#   $NIMIFY_CACHE_DIR/bin/traefik-<v>/traefik     github.com/traefik/traefik/v3 (./cmd/traefik)
# Traefik's kubernetesgateway provider implements HTTPRoute (core, weighted backendRefs) and GRPCRoute; it runs
# as a host process against the local apiserver, like the control plane. Its module replaces some of its own
# dependencies, directives Go honours only in the main module: so the build runs inside the downloaded
# module's directory (read-only, -mod=readonly) instead of from a module of ours that requires it.
# The cache, its locks and atomic renames: hack/build-cache.sh. Progress goes to stderr; the last line on
# stdout is the directory of the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

tag=ensure-gateway
# shellcheck source=build-cache.sh
source "$here/build-cache.sh"
command -v go >/dev/null || { echo "ensure-gateway: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }

build_traefik() {
  local out="$1" version="$2" moddir
  log "downloading github.com/traefik/traefik/v3@$version"
  moddir="$(go mod download -json "github.com/traefik/traefik/v3@$version" \
    | python3 -c 'import json,sys; info = json.load(sys.stdin); print(info.get("Dir") or sys.exit(info.get("Error")))')"
  local ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version"
  ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.Codename=module"
  ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.BuildDate=1970-01-01T00:00:00Z"
  (cd "$moddir" && GOFLAGS=-mod=readonly go build -v -trimpath -ldflags "$ldflags" -o "$out/traefik" ./cmd/traefik 2>&1 \
    | progress "traefik $version")
  [[ -x "$out/traefik" ]] || { echo "ensure-gateway: traefik was not built" >&2; exit 1; }
}

build_component traefik "$TRAEFIK_VERSION" build_traefik
