# Sourced by the launch scripts: the venv's python and a usage printer.
root=${root:?}
PY="$root/.venv/bin/python"
[[ -x $PY ]] || PY=$(command -v python3)
export PATH="$(dirname "$PY"):$PATH"  # horovodrun lives beside the venv's python
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
usage() { sed -n '2,/^set -euo/p' "$1" | sed '/^#SBATCH/d; $d; s/^# \{0,1\}//'; }
