#!/usr/bin/env bash
# Horovod's source as this project builds it: the sdist of the pinned release (downloaded with
# pip, or a file given), checked against the sha256 below, unpacked into DEST and patched with
# third_party/horovod/*.patch in order. Prints the patched source folder. On any failure DEST is
# left empty and the exit code is 1: an unchecked or half-patched source is never built.
#
# Usage: tools/horovod_source.sh DEST [SDIST]     (PIP="python -m pip" by default)
#        tools/horovod_source.sh --version
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
horovod_version=0.28.1
# sha256 of horovod-0.28.1.tar.gz as PyPI serves it; the patches are written against exactly it.
horovod_sha256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0

log() { printf 'horovod_source: %s\n' "$*" >&2; }
if [[ ${1:-} == --version ]]; then echo "$horovod_version"; exit 0; fi
[[ $# -ge 1 && $# -le 2 ]] || { log "usage: $0 DEST [SDIST] | --version"; exit 2; }
dest=$1
mkdir -p "$dest"
fail() { log "$*"; find "$dest" -mindepth 1 -delete; exit 1; }

sdist=${2:-}
if [[ -z $sdist ]]; then
  log "downloading horovod $horovod_version's sdist"
  ${PIP:-python3 -m pip} download -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$dest/download" "horovod==$horovod_version" >&2 || fail "pip could not download it"
  sdist="$dest/download/horovod-$horovod_version.tar.gz"
fi
[[ -f $sdist ]] || fail "$sdist: no such file"
got=$(sha256sum "$sdist" | cut -d' ' -f1)
[[ $got == "$horovod_sha256" ]] ||
  fail "$sdist has sha256 $got, not horovod $horovod_version's $horovod_sha256: not building it"
tar -xzf "$sdist" -C "$dest" || fail "$sdist does not unpack"
src="$dest/horovod-$horovod_version"
for p in "$root"/third_party/horovod/*.patch; do
  log "applying $(basename "$p")"
  patch -p1 -s --no-backup-if-mismatch -d "$src" <"$p" >&2 || fail "$(basename "$p") did not apply"
done
echo "$src"
