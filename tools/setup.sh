#!/usr/bin/env bash
# Set up what is missing, and only that: Debian's Open MPI, the .venv, the pinned packages and
# horovod built from its sdist against them. A second run finds everything and takes seconds.
#
# Usage: tools/setup.sh            (from anywhere; the venv is <checkout>/.venv)
#        PYTHON=python3.11 tools/setup.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
horovod_version=0.28.1

log() { printf 'setup: %s\n' "$*" >&2; }

# --- System MPI (Open MPI from Debian) -------------------------------------------------------
need_pkgs=()
command -v mpirun >/dev/null 2>&1 || need_pkgs+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || need_pkgs+=(libopenmpi-dev)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${need_pkgs[*]}: install Open MPI (e.g. 'sudo apt-get install libopenmpi-dev openmpi-bin'"
    log "or 'conda env create -f environment.yml'), then run this again"
    exit 1
  fi
  log "installing ${need_pkgs[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin >/dev/null
fi

# --- The venv and the pinned packages ---------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)
if [[ ! -f "$stamp" || $(cat "$stamp") != "$want" ]]; then
  log "installing requirements.txt into $venv"
  "${pip[@]}" install -r "$root/requirements.txt"
  echo "$want" >"$stamp"
fi

# --- Horovod, built against this TensorFlow with MPI and Gloo ---------------------------------
horovod_ok() {
  "$venv/bin/python" - "$horovod_version" <<'PY' 2>/dev/null
import sys
import horovod
import horovod.tensorflow as hvd
ok = horovod.__version__ == sys.argv[1] and hvd.mpi_built() and hvd.gloo_built()
sys.exit(0 if ok else 1)
PY
}
if ! horovod_ok; then
  log "building horovod $horovod_version from its sdist (about 3 minutes)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    PATH="$venv/bin:$PATH" "${pip[@]}" install --no-build-isolation \
    "horovod==$horovod_version"
  horovod_ok || { log "horovod built but lacks TensorFlow, MPI or Gloo support"; exit 1; }
fi
log "ready: $venv"
