#!/usr/bin/env bash
# One node: horovodrun -np N over train_dist.py.
# Usage: launch/horovodrun.sh [-np N] [-- train_dist.py flags...]
set -euo pipefail
usage() { sed -n '2,3p' "$0" | sed 's/^# //'; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
np=2
while (($#)); do
  case $1 in
    -np) np=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
py="$root/.venv/bin/python"
[[ -x $py ]] || py=python3
exec horovodrun -np "$np" -H "localhost:$np" "$py" "$root/train_dist.py" "$@"
