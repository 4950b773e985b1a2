#!/usr/bin/env bash
# Horovod Elastic host discovery (horovodrun --host-discovery-script): prints the hosts that may
# run ranks now, one host:slots a line, from the file $ELASTIC_HOSTS_FILE (host or host:slots per
# line, # comments; a host without slots gets $ELASTIC_SLOTS, default 1). Edit the file while the
# job runs to add or drain a host. launch/horovodrun.sh --min-np sets both variables.
#
# Usage: ELASTIC_HOSTS_FILE=hosts.txt launch/discover_hosts.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/launch/common.sh"
case ${1:-} in -h|--help) usage "$0"; exit 0 ;; esac
exec "$PY" -m resnet.launch.discovery
