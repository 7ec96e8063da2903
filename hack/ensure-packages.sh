#!/usr/bin/env bash
# Installs the Debian packages the real node and the image builds need, when any is missing:
#   containerd, runc, CNI plugins (the node), buildah, mmdebstrap, uidmap (the images), iptables, conntrack
#   (kube-proxy and the network guard).
# Needs root (apt-get). Quick when everything is present: one dpkg-query, no apt call.
# Progress goes to stderr; exits non-zero with the reason when it cannot install.
set -euo pipefail

packages=(containerd runc containernetworking-plugins buildah mmdebstrap uidmap iptables conntrack)

log() { printf '[ensure-packages %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
for package in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  log "missing Debian packages: ${missing[*]}; installing them needs root:"
  log "  sudo apt-get install -y ${missing[*]}"
  exit 1
fi

# A single apt run at a time on this machine; apt's own lock would make a second run fail instead of wait.
exec {lockfd}>/var/lock/nimify-ensure-packages.lock
flock "$lockfd"
export DEBIAN_FRONTEND=noninteractive
start=$SECONDS
log "installing ${missing[*]}"
apt_install() {
  # -o APT::Status-Fd prints one "pmstatus:pkg:percent:what" line per step; turn those into progress lines.
  apt-get install -y --no-install-recommends -o APT::Status-Fd=3 "${missing[@]}" 3>&1 1>/dev/null \
    | awk -F: '/^(pm|dl)status/ { printf "[ensure-packages] %3d%% %s\n", $3, $4 > "/dev/stderr"; fflush("/dev/stderr") }'
  return "${PIPESTATUS[0]}"
}
if ! apt_install; then
  log "apt-get install failed; refreshing the package lists and trying again"
  apt-get update -q 2>&1 | sed 's/^/[apt-get update] /' >&2
  apt_install || { log "apt-get install ${missing[*]} failed"; exit 1; }
fi
log "installed ${missing[*]} in $((SECONDS - start))s"
