#!/usr/bin/env bash
# One node: horovodrun with one rank per socket (or -np N), each bound to its own cores, with
# per-rank oneDNN threads from the launch plan (resnet/launch/layout.py).
#
# Usage: launch/horovodrun.sh [-np N] [-H h1:N,h2:N | --hostfile F] [--network-interfaces NIC]
#                             [--min-np A --max-np B --hosts-file F]
#                             [--ssh-port P] [--ssh-identity-file KEY] [--dry_run]
#                             [-- train_dist.py flags...]
#   launch/horovodrun.sh -np 4 -- --data_dir=/data/cifar-10-batches-py --epochs=2
# -np counts every rank, as horovodrun's does. Several hosts: -H node1:2,node2:2 runs 2 ranks on
# each (every host the same; -np, if given, 4); the ranks talk over the network every host has an
# address in, or the interfaces --network-interfaces names. --ssh-port and --ssh-identity-file
# are horovodrun's: the plan's own ssh and probes use them too.
# Elastic (Horovod Elastic, Gloo): between A and B ranks on the hosts listed in F (host:slots per
# line, re-read while the job runs; launch/discover_hosts.sh); adds --elastic to train_dist.py.
#   launch/horovodrun.sh -np 3 --min-np 2 --max-np 3 --hosts-file hosts.txt -- --epochs=2
# A file that names one host at the start needs --network-interfaces (e.g. eth0; lo on one
# machine): without it Horovod waits for a second host to probe for a common interface.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/launch/common.sh"
plan_args=(--launcher horovodrun)
while (($#)); do
  case $1 in
    -np) plan_args+=(--np "$(value "$@")"); shift 2 ;;
    -H|--hosts) plan_args+=(--hosts "$(value "$@")"); shift 2 ;;
    --hostfile) plan_args+=(--hostfile "$(value "$@")"); shift 2 ;;
    --min-np) plan_args+=(--min_np "$(value "$@")"); shift 2 ;;
    --max-np) plan_args+=(--max_np "$(value "$@")"); shift 2 ;;
    --hosts-file) plan_args+=(--hosts_file "$(value "$@")"); shift 2 ;;
    --network-interfaces) plan_args+=(--network_interfaces "$(value "$@")"); shift 2 ;;
    -p|--ssh-port) plan_args+=(--ssh_port "$(value "$@")"); shift 2 ;;
    -i|--ssh-identity-file) plan_args+=(--ssh_identity_file "$(value "$@")"); shift 2 ;;
    --dry_run) plan_args+=(--dry_run); shift ;;
    -h|--help) usage "$0"; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (train_dist.py's flags go after --; see" \
            "$(basename "$0") --help)" >&2; exit 2 ;;
  esac
done
exec "$PY" -m resnet.launch.plan "${plan_args[@]}" -- "$@"
