# Sourced by hack/ensure-binaries.sh and hack/ensure-metrics-stack.sh: the cache outside the clone, and
# building a component into it once (a flock per component makes concurrent runs wait for each other; a
# build lands with an atomic rename, so nobody sees half of it; `.build-info` keeps seconds and bytes for the
# CI budget). The sourcing script sets `tag` (its name, for log lines) first.
# shellcheck shell=bash

cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
mkdir -p "$cache/bin" "$cache/src" "$cache/locks"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

log() { printf '[%s %s] %s\n' "$tag" "$(date +%H:%M:%S)" "$*" >&2; }

# `go build -v` prints one line per compiled package; show a heartbeat instead of thousands of lines.
progress() {
  awk -v what="$1" -v tag="$tag" '/^#|: |^go: / { print > "/dev/stderr"; fflush("/dev/stderr"); next }
                    { n++; if (n % 100 == 0) { printf "[%s] %s: %d packages compiled (last: %s)\n", tag, what, n, $0 > "/dev/stderr"; fflush("/dev/stderr") } }
                    END { printf "[%s] %s: %d packages compiled\n", tag, what, n > "/dev/stderr" }'
}

# build_component NAME VERSION BUILDER: runs BUILDER OUTDIR VERSION under a lock unless the cache holds it;
# prints the component's directory.
build_component() {
  local name="$1" version="$2" builder="$3"
  local dest="$cache/bin/$name-$version"
  if [[ -f "$dest/.complete" ]]; then
    echo "$dest"; return
  fi
  exec {lockfd}>"$cache/locks/$name-$version.lock"
  log "waiting for the build lock of $name $version"
  flock "$lockfd"
  if [[ ! -f "$dest/.complete" ]]; then
    local tmp; tmp="$(mktemp -d "$cache/bin/.$name-$version.XXXXXX")"
    local start=$SECONDS
    log "building $name $version (cold builds take minutes; cached in $dest)"
    "$builder" "$tmp" "$version"
    local seconds=$((SECONDS - start)) bytes
    bytes="$(du -sb "$tmp" | cut -f1)"
    printf 'seconds=%s\nbytes=%s\n' "$seconds" "$bytes" >"$tmp/.build-info"
    touch "$tmp/.complete"
    rm -rf "$dest"; mv "$tmp" "$dest"
    log "built $name $version in ${seconds}s ($((bytes / 1024 / 1024)) MiB)"
  fi
  flock -u "$lockfd"; exec {lockfd}>&-
  echo "$dest"
}
