#!/usr/bin/env bash
# Set up what is missing, and only that: Debian's Open MPI, a supported Python, the venv with the
# pinned packages, and horovod built from its checked sdist with our patches
# (third_party/horovod/). A second run finds everything and takes seconds.
#
# Usage: tools/setup.sh                      (from anywhere; the venv is <checkout>/.venv)
#        PYTHON=python3.12 tools/setup.sh    (this interpreter, or fail: no search)
#        VENV=/tmp/v tools/setup.sh          (another venv folder)
#        tools/setup.sh --which-python       (print the interpreter it would use, and stop)
#
# A venv is only reused when its Python is the one chosen here and its last set-up finished
# (the stamp below, written last); otherwise it is rebuilt or completed, never used half-made.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
# TensorFlow 2.21 has wheels for Python 3.10 to 3.13.
supported=(3.13 3.12 3.11 3.10)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- A supported Python ----------------------------------------------------------------------
# X.Y of an interpreter, or nothing when it does not run (a pyenv shim for a version that is
# installed but not selected exists on PATH and fails).
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
is_supported() { local v; for v in "${supported[@]}"; do [[ $1 == "$v" ]] && return 0; done; return 1; }

find_python() {
  local cand v
  if [[ -n ${PYTHON:-} ]]; then  # asked for by name: that one or nothing
    v=$(py_version "$PYTHON")
    [[ -n $v ]] || die "PYTHON=$PYTHON does not run"
    is_supported "$v" || die "PYTHON=$PYTHON is Python $v; TensorFlow 2.21 needs 3.10 to 3.13"
    echo "$PYTHON"; return
  fi
  local cands=(python3)
  for v in "${supported[@]}"; do cands+=("python$v"); done
  if command -v pyenv >/dev/null 2>&1; then
    local proot; proot=$(pyenv root)
    for v in "${supported[@]}"; do
      for cand in "$proot"/versions/"$v".*/bin/python"$v"; do [[ -x $cand ]] && cands+=("$cand"); done
    done
  fi
  if command -v uv >/dev/null 2>&1; then
    for v in "${supported[@]}"; do
      cand=$(uv python find "$v" 2>/dev/null) && cands+=("$cand")
    done
  fi
  for cand in "${cands[@]}"; do
    command -v "$cand" >/dev/null 2>&1 || continue
    v=$(py_version "$cand")
    if [[ -n $v ]] && is_supported "$v"; then
      [[ $cand == python3 ]] || log "python3 is not Python 3.10-3.13; using $cand (Python $v)"
      echo "$cand"; return
    fi
  done
  die "no Python 3.10-3.13 found (python3 is $(py_version python3 || true)). Install one:" \
      "Debian/Ubuntu 'sudo apt-get install python3.12 python3.12-venv python3.12-dev', or conda" \
      "'conda env create -f environment.yml', then run this again (or set PYTHON=/path/to/python3.X)"
}
py=$(find_python)
want_py=$(py_version "$py")
if [[ ${1:-} == --which-python ]]; then echo "$py"; exit 0; fi


# --- System MPI (Open MPI from Debian) -------------------------------------------------------
need_pkgs=()
command -v mpirun >/dev/null 2>&1 || need_pkgs+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || need_pkgs+=(libopenmpi-dev)
command -v patch >/dev/null 2>&1 || need_pkgs+=(patch)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing ${need_pkgs[*]}: install them (e.g. 'sudo apt-get install libopenmpi-dev" \
        "openmpi-bin patch' or 'conda env create -f environment.yml'), then run this again"
  fi
  log "installing ${need_pkgs[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin patch >/dev/null
fi

horovod_version=$("$root/tools/horovod_source.sh" --version)  # pinned, with its sha256, there

# --- The venv --------------------------------------------------------------------------------
stamp="$venv/.setup-complete"
# What a finished set-up is made of: the Python, the pins, the patches, our kernels' sources and
# this script.
want_stamp=$(cat <(echo "python $want_py") "$root/requirements.txt" "$root/requirements-nodeps.txt" \
             "$root"/third_party/horovod/*.patch "$root"/resnet/kernels/*.cc \
             "$root"/resnet/kernels/*.h "$root"/resnet/kernels/*.py "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)

have_py=""
[[ -e $venv ]] && have_py=$(py_version "$venv/bin/python")
if [[ -e $venv && $have_py != "$want_py" ]]; then
  made_by="Python $have_py"; [[ -n $have_py ]] || made_by="a Python that no longer runs"
  log "rebuilding $venv: it was made by $made_by, not Python $want_py ($py)"
  rm -rf "$venv"
fi
if [[ ! -e $venv ]]; then
  log "creating $venv with $py (Python $want_py)"
  "$py" -m venv "$venv" || die "could not create a venv with $py: install its venv module" \
    "(Debian/Ubuntu: 'sudo apt-get install python$want_py-venv'), then run this again"
fi
vpy="$venv/bin/python"
pip=("$vpy" -m pip --disable-pip-version-check -q)

horovod_ok() {
  "$vpy" - "$horovod_version" <<'PY' 2>/dev/null
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import horovod
import horovod.tensorflow as hvd
import horovod.tensorflow.keras as hvd_keras
import json, tensorflow as tf
# Built against this TensorFlow (Horovod only warns on a mismatch, as after TF 2.15 -> 2.21 in a
# kept venv), and patched (third_party/horovod/0002: the Keras backend is tf_keras's).
meta = json.load(open(os.path.join(os.path.dirname(horovod.__file__), "metadata.json")))
ok = (horovod.__version__ == sys.argv[1] and hvd.mpi_built() and hvd.gloo_built()
      and meta.get("tensorflow") == tf.__version__
      and hvd_keras.K.__name__.startswith("tf_keras"))
sys.exit(0 if ok else 1)
PY
}

if [[ -f $stamp && $(cat "$stamp") == "$want_stamp" ]] && horovod_ok; then
  log "ready: $venv (Python $want_py)"
  exit 0
fi
rm -f "$stamp"

log "installing requirements.txt into $venv"
"${pip[@]}" install -r "$root/requirements.txt"
# tf-keras declares a dependency on the full `tensorflow` wheel; we have tensorflow-cpu, the same
# TensorFlow without the GPU kernels (half the download), so its dependency is not followed.
"${pip[@]}" install --no-deps -r "$root/requirements-nodeps.txt"

# --- Horovod, patched, built against this TensorFlow with MPI and Gloo ------------------------
# The built wheel is kept per Python, TensorFlow and patch set, so a rebuilt venv needs no new
# compile (about 8 minutes on 2 cores).
tf_version=$("$vpy" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')
patch_sum=$(cat "$root"/third_party/horovod/*.patch | sha256sum | cut -c1-12)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/resnet-horovod/py$want_py-tf$tf_version-$patch_sum"
tmp=""
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT
build_horovod() {
  tmp=$(mktemp -d)
  local src
  src=$(PIP="$vpy -m pip" "$root/tools/horovod_source.sh" "$tmp/src") ||
    die "no checked, patched horovod source to build"
  log "building horovod $horovod_version against TensorFlow $tf_version (about 8 minutes on 2 cores)"
  mkdir -p "$wheels"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
    PATH="$venv/bin:$PATH" "${pip[@]}" wheel --no-deps --no-build-isolation -w "$tmp/wheel" "$src"
  mv "$tmp"/wheel/horovod-*.whl "$wheels/"
}
if ! horovod_ok; then
  compgen -G "$wheels/horovod-$horovod_version-*.whl" >/dev/null || build_horovod
  "${pip[@]}" install --no-deps --force-reinstall "$wheels"/horovod-"$horovod_version"-*.whl
  horovod_ok || die "horovod installed but does not import with TensorFlow, MPI and Gloo support"
fi

# --- The job's own CPU kernels (resnet/kernels), compiled for this machine's TensorFlow -------
# About 25 s. The job runs without them (TensorFlow's own kernels, slower in bf16), so a failed
# build is said, not fatal; tests/test_kernels.py fails on a set-up that did not build them.
log "building resnet/kernels against TensorFlow $tf_version"
(cd "$root" && "$vpy" -m resnet.kernels.build >/dev/null) ||
  log "WARNING: resnet/kernels not built (above): bf16 steps use TensorFlow's slower kernels"

echo "$want_stamp" >"$stamp"
log "ready: $venv (Python $want_py, TensorFlow $tf_version, horovod $horovod_version patched)"
