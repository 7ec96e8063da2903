#!/usr/bin/env bash
# Fetches the real TensorRT Python bindings (10.x and 11.x, pinned in versions.env) for the contract test that
# compares tests/engine/fake_tensorrt.py with them, and caches them outside the clone:
#   $NIMIFY_CACHE_DIR/tensorrt-bindings/<package>-<version>-<python tag>/{tensorrt_bindings/,stub/,major}
# The bindings' wheel (1.3 MB) is on PyPI; the libraries they link (libnvinfer, 1+ GB, only on
# pypi.nvidia.com) are not needed to read the bindings' enums and signatures: three stub libraries with the
# nine C entry points the bindings import stand in, each returning NULL/0 as TensorRT does without a usable
# GPU, so `tensorrt.Builder(logger)` raises the real TypeError. Needs the venv (hack/setup-venv.sh) and gcc.
# Progress goes to stderr; the last line on stdout is the colon-separated list of the cached directories.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
python="${NIMIFY_PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || { echo "ensure-tensorrt-bindings: no $python; run hack/setup-venv.sh" >&2; exit 1; }
command -v gcc >/dev/null || { echo "ensure-tensorrt-bindings: gcc is needed for the stub libraries" >&2; exit 1; }

cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
mkdir -p "$cache/tensorrt-bindings" "$cache/locks"
tag="$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
log() { printf '[ensure-tensorrt-bindings %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

fetch() {  # $1 = package==version
  local spec="$1" name="${1%%==*}" version="${1##*==}" major
  major="${version%%.*}"
  local dest="$cache/tensorrt-bindings/$name-$version-$tag"
  if [[ -f "$dest/.complete" ]]; then echo "$dest"; return; fi
  exec {lockfd}>"$cache/locks/tensorrt-bindings-$name-$version-$tag.lock"
  flock "$lockfd"
  if [[ ! -f "$dest/.complete" ]]; then
    local tmp; tmp="$(mktemp -d "$cache/tensorrt-bindings/.$name-$version.XXXXXX")"
    log "downloading $spec (the bindings only, from PyPI)"
    "$python" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp/wheel" "$spec" >&2
    "$python" - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
[wheel] = (tmp / "wheel").glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    archive.extractall(tmp, [n for n in archive.namelist() if n.startswith("tensorrt_bindings/")])
PY
    mkdir -p "$tmp/stub"
    cat > "$tmp/stub/stub.c" <<'C'
/* The C entry points of libnvinfer, libnvinfer_plugin and libnvonnxparser that the bindings import, answering
   as TensorRT does when it cannot create anything (no usable GPU): NULL, 0, false. */
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return NULL; }
void* getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* name_space) { return 0; }
C
    for lib in nvinfer nvinfer_plugin nvonnxparser; do
      gcc -shared -fPIC -Wl,-soname,"lib$lib.so.$major" -o "$tmp/stub/lib$lib.so.$major" "$tmp/stub/stub.c"
    done
    echo "$major" > "$tmp/major"
    rm -rf "$tmp/wheel"
    touch "$tmp/.complete"
    rm -rf "$dest"; mv "$tmp" "$dest"
    log "cached $spec in $dest"
  fi
  flock -u "$lockfd"; exec {lockfd}>&-
  echo "$dest"
}

dirs=()
for spec in "$TENSORRT_10_BINDINGS" "$TENSORRT_11_BINDINGS"; do
  dirs+=("$(fetch "$spec")")
done
(IFS=:; echo "${dirs[*]}")
