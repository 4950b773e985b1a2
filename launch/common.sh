# Sourced by the launch scripts: the venv's python and a usage printer.
root=${root:?}
# The venv tools/setup.sh made: $VENV where it was given one (VENV=$CONDA_PREFIX for conda),
# else the checkout's .venv. Never whatever python3 is on PATH: it lacks the patched horovod,
# and the job would fail later on every rank with a less clear error.
venv=${VENV:-$root/.venv}
PY="$venv/bin/python"
if [[ ! -x $PY ]]; then
  echo "error: no Python at $PY: run tools/setup.sh (make setup) first, or set VENV to the" \
       "environment it set up (VENV=\$CONDA_PREFIX for conda)" >&2
  exit 2
fi
export PATH="$venv/bin:$PATH"  # horovodrun lives beside the venv's python
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
usage() { sed -n '2,/^set -euo/p' "$1" | sed '/^#SBATCH/d; $d; s/^# \{0,1\}//'; }
# The value of option $1, which $2 holds: a clear error when it is missing.
value() {
  if [[ -z ${2:-} || $2 == -* ]]; then
    echo "error: $1 needs a value (see $(basename "$0") --help)" >&2
    exit 2
  fi
  printf '%s' "$2"
}
