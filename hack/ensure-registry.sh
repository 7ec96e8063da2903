#!/usr/bin/env bash
# Builds the dev cluster's OCI registry, the CNCF distribution registry, from its published Go module and caches
# it outside the clone:
#   $NIMIFY_CACHE_DIR/bin/registry-<v>/registry     github.com/distribution/distribution/v3 (./cmd/registry)
# It holds the model images `nimify build` pushes (docs/model-images.md) and serves them to the operator, the
# serving pods' model puller and the real node's containerd. Built inside the downloaded module's directory
# (read-only, -mod=readonly), like ensure-gateway.sh. The cache, its locks and atomic renames:
# hack/build-cache.sh. Progress goes to stderr; the last line on stdout is the directory of the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

tag=ensure-registry
# shellcheck source=build-cache.sh
source "$here/build-cache.sh"
command -v go >/dev/null || { echo "ensure-registry: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }

build_registry() {
  local out="$1" version="$2" moddir
  log "downloading github.com/distribution/distribution/v3@$version"
  moddir="$(go mod download -json "github.com/distribution/distribution/v3@$version" \
    | python3 -c 'import json,sys; info = json.load(sys.stdin); print(info.get("Dir") or sys.exit(info.get("Error")))')"
  local ldflags="-s -w -X github.com/distribution/distribution/v3/version.version=$version"
  (cd "$moddir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$out/registry" ./cmd/registry 2>&1 \
    | progress "registry $version")
  [[ -x "$out/registry" ]] || { echo "ensure-registry: registry was not built" >&2; exit 1; }
}

build_component registry "$REGISTRY_VERSION" build_registry
