#!/usr/bin/env bash
# README's test command: set up what is missing, then run the whole test suite.
# Usage: tools/test.sh [pytest args...]     (-n 0: one process, no workers)
#        TEST_WORKERS=N tools/test.sh       (N pytest-xdist workers; 2 unless set)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
cd "$root"
# Two workers by default: about half the suite waits (Slurm requeues, link-cut timers, ssh,
# elastic rendezvous), so one process left one of this machine's 2 cores idle on average. The
# tests that start emulated hosts or Slurm share one worker (xdist_group "hosts").
exec "$root/.venv/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" "$@" tests
