#!/usr/bin/env bash
# Builds Nimify's container images from this directory with buildah (no network, no Docker engine):
#   bash images/build.sh [NAME...]     NAME: pause nimify triton-cpu nimify-builder (default: the first three)
# Installs what it needs first (Debian packages, the virtualenv whose package versions the images get).
# Cached under ~/.cache/nimify/images by a content hash of the inputs; prints {name: reference} as JSON.
# Needs root (buildah's overlay storage, mmdebstrap's chroot).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/hack/ensure-packages.sh"
bash "$root/hack/setup-venv.sh"
exec "$root/.venv/bin/nimify" dev-cluster images "$@"
