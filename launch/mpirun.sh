#!/usr/bin/env bash
# Multi-socket and multi-node with Open MPI's mpirun: ranks spread evenly over sockets, each bound
# to its own cores (--map-by ppr:K:socket:pe=C --bind-to core), threads from the launch plan.
# Set INTEL_MPI=1 for Intel MPI's mpirun (pinning by I_MPI_PIN_DOMAIN, env by -genv).
#
# Usage: launch/mpirun.sh [--ranks_per_node N] [--nodes M] [--hosts h1:N,h2:N | --hostfile F]
#                         [--dry_run] [-- train_dist.py flags...]
#   launch/mpirun.sh --ranks_per_node 2 --nodes 2 --hosts node1:2,node2:2 -- --epochs=2
# Every node must see the checkout and the data at the same paths. sshd on another port, or a
# key of its own: set OMPI_MCA_plm_rsh_args (e.g. "-p 2222 -i ~/.ssh/cluster"), as for mpirun.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/launch/common.sh"
case ${1:-} in -h|--help) usage "$0"; exit 0 ;; esac
launcher=mpirun
[[ ${INTEL_MPI:-0} == 1 ]] && launcher=intel-mpirun
exec "$PY" -m resnet.launch.plan --launcher "$launcher" "$@"
