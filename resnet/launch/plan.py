"""`python -m resnet.launch.plan`: plan ranks, cores and threads for a node and launch them.

The shell scripts in launch/ only call this; it prints the plan and execs the launcher (with
--dry_run, prints it and stops). The work is in the modules it wires together: the host list
(hosts.py), the node's layout of ranks over cores (layout.py), the network the hosts share
(network.py), one command line per launcher (commands.py), and every rank's environment
(resnet/runtime/env.py).
"""

import argparse
import os
import shlex
import sys
from typing import List, Optional, Sequence

from resnet.errors import EXIT_USAGE, UsageError
from resnet.launch import CHECKOUT, hosts as hosts_lib, layout as layout_lib, network
from resnet.launch.commands import LAUNCHERS, Elastic, Where, command
from resnet.runtime import env as env_lib
from resnet.runtime import topology as topo


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resnet.launch.plan",
        description="Plan ranks, cores and threads for this node (or a stated one) and launch "
                    "train_dist.py. Everything after -- goes to train_dist.py.")
    p.add_argument("--launcher", choices=LAUNCHERS, default="horovodrun")
    p.add_argument("--np", type=int, default=None,
                   help="ranks in all, as horovodrun -np (elastic: to start with); default: "
                        "the hosts' slots, else one per socket on each node")
    p.add_argument("--ranks_per_node", type=int, default=None,
                   help="ranks on each node (instead of --np); default: one per socket")
    p.add_argument("--nodes", type=int, default=None, help="default: the hosts named, or 1")
    p.add_argument("--hosts", help="host:slots,... (horovodrun/mpirun -H)")
    p.add_argument("--hostfile")
    p.add_argument("--mpi", default="pmix", help="srun --mpi= (pmix, pmi2)")
    p.add_argument("--sockets", type=int, help="plan for a stated topology instead of this node")
    p.add_argument("--cores_per_socket", type=int)
    p.add_argument("--threads_per_core", type=int, default=1)
    p.add_argument("--numa_nodes", type=int, default=None)
    p.add_argument("--min_np", type=int, help="elastic (horovodrun): fewest ranks to go on with")
    p.add_argument("--max_np", type=int, help="elastic (horovodrun): most ranks to take in")
    p.add_argument("--hosts_file", help="elastic: host:slots lines, re-read while the job runs")
    p.add_argument("--network_interfaces",
                   help="the NICs ranks talk over, e.g. eth0 (lo: one machine); default: the "
                        "network every host has an address in")
    p.add_argument("--ssh_port", type=int, default=None,
                   help="the hosts' sshd port (horovodrun --ssh-port): the plan's ssh and "
                        "probes and the launcher use it")
    p.add_argument("--ssh_identity_file", default=None,
                   help="the key to log in with (horovodrun --ssh-identity-file)")
    p.add_argument("--dry_run", action="store_true", help="print the command and env, run nothing")
    p.add_argument("--program", default=None,
                   help="what each rank runs (default: this venv's python train_dist.py)")
    return p


def _topology(args) -> topo.Topology:
    if args.sockets is None and args.cores_per_socket is None:
        return topo.read()
    if args.sockets is None or args.cores_per_socket is None:
        raise UsageError("--sockets and --cores_per_socket go together")
    return topo.Topology(args.sockets, args.cores_per_socket, args.threads_per_core,
                         args.numa_nodes or args.sockets)


def _hosts(args) -> List[hosts_lib.Host]:
    if args.hosts and args.hostfile:
        raise UsageError("--hosts and --hostfile: give one of them")
    if args.hosts:
        return hosts_lib.parse_list(args.hosts, "--hosts")
    return hosts_lib.read_file(args.hostfile, "--hostfile") if args.hostfile else []


def _elastic(args) -> Optional[Elastic]:
    if args.min_np is None and args.max_np is None and not args.hosts_file:
        return None
    if args.hosts_file is None:
        raise UsageError("elastic mode needs --hosts_file (host:slots lines)")
    np_ = args.np or args.min_np or 1
    return Elastic(np_, args.min_np or np_, args.max_np or np_,
                   os.path.abspath(args.hosts_file), args.network_interfaces)


def _layout(args, t: topo.Topology, hosts, elastic: Optional[Elastic]) -> layout_lib.NodeLayout:
    openmp = env_lib.openmp_runtime_present()
    if elastic:  # -np counts ranks over all hosts; the thread plan is for one host's most
        return layout_lib.make(t, elastic.slots_per_host(), 1, openmp=openmp)
    if args.np is not None and args.ranks_per_node is not None:
        raise UsageError("--np (ranks in all) and --ranks_per_node: give one of them")
    nodes = args.nodes or len(hosts) or 1
    if hosts:
        if args.nodes and args.nodes != len(hosts):
            raise UsageError(f"--nodes={args.nodes} with {len(hosts)} host(s) named: give "
                             "one host per node")
        np_ = args.np if args.ranks_per_node is None else args.ranks_per_node * nodes
        per_node = hosts_lib.ranks_per_node(hosts, np_, t.sockets)
    elif args.np is not None:
        if args.np % nodes:
            raise UsageError(f"--np {args.np} over {nodes} nodes: use a multiple of {nodes}")
        per_node = args.np // nodes
    else:
        per_node = args.ranks_per_node or layout_lib.default_ranks_per_node(t)
    return layout_lib.make(t, per_node, nodes, openmp=openmp)


def _ssh(args) -> network.Ssh:
    if (args.ssh_port or args.ssh_identity_file) and args.launcher != "horovodrun":
        raise UsageError("--ssh-port and --ssh-identity-file are horovodrun's; for mpirun set "
                         "OMPI_MCA_plm_rsh_args (e.g. '-p 2222 -i ~/.ssh/cluster'), which the "
                         "plan reads too")
    if args.ssh_identity_file and not os.path.isfile(args.ssh_identity_file):
        raise UsageError(f"--ssh-identity-file={args.ssh_identity_file}: no such file")
    return network.Ssh(args.ssh_port, args.ssh_identity_file and
                       os.path.abspath(args.ssh_identity_file))


def _network(args, hosts, elastic: Optional[Elastic],
             ssh: network.Ssh) -> Optional[network.Choice]:
    """The network for a multi-host launch (None on one machine, or under srun/Intel MPI,
    which choose their own fabric), decided by asking every host."""
    if args.launcher not in ("horovodrun", "mpirun"):
        return None
    if args.sockets is not None or elastic and args.network_interfaces:
        # A stated topology plans for another machine: its hosts are not asked. Named
        # interfaces in elastic mode go as they are: its hosts may not all be up yet.
        return None
    names = [h for h, _ in elastic.hosts()] if elastic else hosts_lib.names(hosts)
    return network.plan_network(names or ["localhost"], args.network_interfaces, ssh=ssh)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = _parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        t = _topology(args)
        hosts, elastic = _hosts(args), _elastic(args)
        layout = _layout(args, t, hosts, elastic)
        program = (shlex.split(args.program) if args.program else
                   [sys.executable, os.path.join(CHECKOUT, "train_dist.py")]) + train_args
        ssh = _ssh(args)
        net = _network(args, hosts, elastic, ssh)
        cmd = command(layout, args.launcher, program,
                      Where(args.hosts, args.hostfile, args.mpi, net, ssh), elastic)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    plan_env = dict(layout.env)
    print(layout_lib.describe(layout))
    if net:
        print(network.describe(net))
    elif args.launcher == "srun" and args.sockets is None:
        net_env, said = network.open_mpi_env(os.environ, args.network_interfaces)
        plan_env.update(net_env)
        print(said)
    print("env: " + " ".join(f"{k}={v}" for k, v in sorted(plan_env.items())))
    print("command: " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    env = env_lib.launch_env(plan_env, os.environ)
    if elastic is not None:
        env["ELASTIC_HOSTS_FILE"] = elastic.hosts_file
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
