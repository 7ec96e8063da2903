#!/usr/bin/env bash
# Real models from real exporters, shipped inside PyPI packages (silero-vad's voice activity detectors, an
# LSTM over an STFT front-end; RapidOCR's PaddleOCR detector and recogniser; magika's tf2onnx file-type
# classifier): each wheel of $REAL_MODEL_WHEELS downloaded without its dependencies, its .onnx files copied
# once into $NIMIFY_CACHE_DIR/real-models-<hash of the list>/<package>/... and kept there.
# Prints that directory on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${NIMIFY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimify}"
key="$(printf '%s' "$REAL_MODEL_WHEELS" | sha256sum | cut -c1-12)"
dest="$cache/real-models-$key"
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"; exit 0
fi
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
mkdir -p "$cache/locks"
exec {lockfd}>"$cache/locks/real-models-$key.lock"
flock "$lockfd"
if [[ ! -f "$dest/.complete" ]]; then
  echo "[ensure-real-models] downloading $REAL_MODEL_WHEELS" >&2
  tmp="$(mktemp -d "$cache/.real-models-$key.XXXXXX")"
  # shellcheck disable=SC2086  # the list is one word per requirement
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$tmp/wheels" $REAL_MODEL_WHEELS >&2
  for wheel in "$tmp"/wheels/*.whl; do
    "$python" - "$wheel" "$tmp/models" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.endswith(".onnx") and ".." not in Path(name).parts:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
PY
  done
  mv "$tmp/models" "$tmp/ready"
  rm -rf "$tmp/wheels"
  touch "$tmp/ready/.complete"
  rm -rf "$dest"; mv "$tmp/ready" "$dest"; rm -rf "$tmp"
fi
echo "$dest"
