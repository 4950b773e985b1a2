#!/usr/bin/env bash
# README's test command: set up what is missing, then run the whole test suite.
# Usage: tools/test.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q "$@" tests
