#!/usr/bin/env bash
# Horovod Elastic host discovery (horovodrun --host-discovery-script): prints host:slots lines
# from the file $ELASTIC_HOSTS_FILE (resnet/discovery.py). launch/horovodrun.sh --min-np sets it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/launch/common.sh"
exec "$PY" -m resnet.discovery
