"""Launch plans: how many ranks go where, on which cores, with how many threads, and the command.

Pure arithmetic over a Topology, so it is tested for machines we are not on. The shell scripts in
launch/ only call `python -m resnet.launch.plan ...`, which prints the plan and execs the command
(or with --dry_run, prints it and stops).

Why the numbers are what they are (Intel's TensorFlow/Horovod CPU recipes, and measurement):
- Ranks are spread evenly over sockets and bound to whole physical cores, so a rank's threads
  never leave its socket's memory (NUMA) and never share a core with another rank.
- Threads: resnet.runtime.threads.for_rank, the one rule every launcher applies (intra-op =
  the rank's physical cores, one left spare from 8 without hyper-threading; inter-op 2, or 1
  for a one-core rank): its docstring says why.
- OMP_NUM_THREADS = intra-op threads: OpenMP builds of TensorFlow (Intel's) size their pool from
  it, and train_dist.py reads it as the intra-op default. KMP_AFFINITY/KMP_BLOCKTIME only matter
  where Intel's OpenMP runtime is loaded; stock tensorflow-cpu uses Eigen's threads, and there
  they are left out rather than set to no effect.
- TF_ENABLE_ONEDNN_OPTS=1: oneDNN's fused CPU kernels (the default on x86 Linux since TF 2.9;
  set explicitly so an inherited 0 does not silently halve the speed).
"""

import argparse
import dataclasses
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from resnet.launch import discovery, network
from resnet.launch import topology as topo
from resnet.errors import EXIT_USAGE, UsageError
from resnet.launch import CHECKOUT
from resnet.runtime import threads

LAUNCHERS = ("horovodrun", "mpirun", "srun", "intel-mpirun")
# A rank that hangs (stuck I/O, a stopped process) stalls every allreduce. Horovod names the
# missing ranks after a minute and, with a shutdown time, ends the job instead of hanging forever.
STALL_ENV = {"HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
             "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "600"}
# While a rank waits in a collective, Open MPI spins on the CPU; Horovod's background thread
# meets the other ranks every cycle (1 ms), so that spin shares the rank's cores with its own
# training threads. Yielding in the spin measured +38% at 2 ranks x 1 core (BENCHMARKS.md).
# Intel MPI and Gloo ignore it. A value already in the environment wins (launch_env).
COMM_ENV = {"OMPI_MCA_mpi_yield_when_idle": "1"}
# Across hosts, Open MPI's own choice of allreduce algorithm (coll_tuned's fixed rules, by rank
# count and message size) measured 2.6x slower than its ring at 3 hosts for ResNet50's fused
# gradients (3.33 s against 1.26 s at 1 Gb/s, the ring 1.20x the network model's bandwidth
# term; Gloo's ring, what elastic mode uses, 1.24 s). At 2 hosts they are equal.
# So a multi-host plan asks for the ring (algorithm 4; below one element per rank it falls back
# to recursive doubling). As COMM_ENV: a value already in the environment wins.
RING_ENV = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
            "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"}


def rank_env(rank: threads.RankThreads, nodes: int) -> Dict[str, str]:
    """Every rank's environment, whichever launcher starts it (this plan or Slurm's)."""
    return {**rank.env(), "TF_ENABLE_ONEDNN_OPTS": "1", **STALL_ENV, **COMM_ENV,
            **(RING_ENV if nodes > 1 else {})}


@dataclasses.dataclass(frozen=True)
class RankSlot:
    local_rank: int
    sockets: Tuple[int, ...]
    cores: Tuple[int, ...]  # node-wide physical core numbers: socket * cores_per_socket + i


@dataclasses.dataclass(frozen=True)
class Plan:
    topology: topo.Topology
    nodes: int
    ranks_per_node: int
    cores_per_rank: int
    sockets_per_rank: int  # > 1 when fewer ranks than sockets
    ranks_per_socket: int  # 0 when a rank spans several sockets
    intra_op_threads: int
    inter_op_threads: int
    slots: Tuple[RankSlot, ...]
    env: Dict[str, str]
    notes: Tuple[str, ...]

    @property
    def total_ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def cpus_per_rank(self) -> int:
        """Logical CPUs per rank, what Slurm's --cpus-per-task counts."""
        return self.cores_per_rank * self.topology.threads_per_core


def _suggest(ranks: int, sockets: int, cores: int) -> str:
    good = [n for n in range(1, cores + 1)
            if (n % sockets == 0 if n >= sockets else sockets % n == 0)]
    lower = [n for n in good if n < ranks][-1:]
    higher = [n for n in good if n > ranks][:1]
    return " or ".join(str(n) for n in lower + higher)


def make(t: topo.Topology, ranks_per_node: int, nodes: int = 1, openmp: bool = False) -> Plan:
    if ranks_per_node < 1 or nodes < 1:
        raise UsageError(f"--ranks_per_node={ranks_per_node} --nodes={nodes}: need at least 1 "
                         "of each")
    if ranks_per_node > t.physical_cores:
        raise UsageError(
            f"{ranks_per_node} ranks per node on {t.physical_cores} physical cores: more ranks "
            f"than cores; use at most {t.physical_cores} (hyper-threads do not count: two ranks "
            "on one core halve each other's speed)")
    notes = []
    if ranks_per_node >= t.sockets:
        if ranks_per_node % t.sockets:
            raise UsageError(
                f"{ranks_per_node} ranks do not divide evenly over {t.sockets} sockets; one "
                "socket would carry more ranks and the others would wait for it at every "
                f"allreduce. Use {_suggest(ranks_per_node, t.sockets, t.physical_cores)} ranks "
                "per node")
        per_socket = ranks_per_node // t.sockets
        cores_per_rank, sockets_per_rank = t.cores_per_socket // per_socket, 1
        left = t.cores_per_socket - per_socket * cores_per_rank
        if left:
            notes.append(f"{left} core(s) per socket left idle: {t.cores_per_socket} cores do "
                         f"not divide by {per_socket} ranks")
    else:
        if t.sockets % ranks_per_node:
            raise UsageError(
                f"{ranks_per_node} ranks cannot split {t.sockets} sockets evenly; use "
                f"{_suggest(ranks_per_node, t.sockets, t.physical_cores)} ranks per node")
        per_socket, sockets_per_rank = 0, t.sockets // ranks_per_node
        cores_per_rank = t.cores_per_socket * sockets_per_rank
        notes.append(f"each rank spans {sockets_per_rank} sockets: memory traffic crosses "
                     "sockets; one rank per socket is usually faster")
    rank = threads.for_rank(cores_per_rank, sockets_per_rank, t.threads_per_core)
    intra, inter = rank.intra, rank.inter
    if rank.spare_core:
        notes.append("one core per rank left to Horovod's background thread and tf.data")
    slots = []
    for r in range(ranks_per_node):
        if per_socket:
            socket, i = divmod(r, per_socket)
            first = socket * t.cores_per_socket + i * cores_per_rank
            sockets = (socket,)
        else:
            first = r * cores_per_rank
            sockets = tuple(range(r * sockets_per_rank, (r + 1) * sockets_per_rank))
        slots.append(RankSlot(r, sockets, tuple(range(first, first + cores_per_rank))))
    env = rank_env(rank, nodes)
    if openmp:
        env["KMP_AFFINITY"] = ("granularity=fine,compact,1,0" if t.threads_per_core > 1
                               else "granularity=fine,compact")
        env["KMP_BLOCKTIME"] = "1"  # idle OpenMP threads yield soon: Horovod's thread needs the core
    return Plan(t, nodes, ranks_per_node, cores_per_rank, sockets_per_rank, per_socket, intra,
                inter, tuple(slots), env, tuple(notes))


def openmp_runtime_present() -> bool:
    """Whether this TensorFlow ships Intel's OpenMP (libiomp5), which reads KMP_* variables."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return False
    if not spec or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        for _, _, files in os.walk(root):
            if any(f.startswith("libiomp5") for f in files):
                return True
    return False


# --- Commands ---------------------------------------------------------------------------------

def mpi_map_by(plan: Plan) -> str:
    if plan.ranks_per_socket:
        return f"ppr:{plan.ranks_per_socket}:socket:pe={plan.cores_per_rank}"
    return f"ppr:{plan.ranks_per_node}:node:pe={plan.cores_per_rank}"


def open_mpi(ranks: int, map_by: str, env_keys, extra: Sequence[str] = ()) -> List[str]:
    """Open MPI's mpirun up to the program: ranks bound to cores, `env_keys` passed on."""
    cmd = ["mpirun", "-np", str(ranks), "--map-by", map_by, "--bind-to", "core"] + list(extra)
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")  # Open MPI refuses root unless told
    for key in sorted(env_keys):
        cmd += ["-x", key]  # Open MPI passes only the variables named with -x to remote ranks
    return cmd


@dataclasses.dataclass(frozen=True)
class Elastic:
    """horovodrun's elastic mode: between min_np and max_np ranks on the hosts the discovery
    script names (launch/discover_hosts.sh, reading hosts_file)."""
    np: int
    min_np: int
    max_np: int
    hosts_file: str
    network_interfaces: Optional[str] = None  # horovodrun --network-interfaces, e.g. "eth0"

    def check(self) -> None:
        if not 1 <= self.min_np <= self.np <= self.max_np:
            raise UsageError(f"elastic: need 1 <= --min-np ({self.min_np}) <= -np ({self.np}) "
                             f"<= --max-np ({self.max_np})")
        # Without named interfaces, Horovod finds the ones common to all hosts by running a
        # probe on two of them, and until the discovery script names a second host it waits,
        # printing nothing, for its 10-minute start timeout. Say so now instead.
        if not self.network_interfaces and len(self.hosts()) < 2:
            raise UsageError(
                f"--hosts-file={self.hosts_file} names one host: Horovod Elastic then waits for "
                "a second before it starts (it probes 2 hosts for a common network interface). "
                "Pass --network-interfaces NIC (the cluster's, e.g. eth0 or ib0; lo when every "
                "rank stays on this machine), or list a second host")

    def hosts(self) -> List[Tuple[str, int]]:
        try:
            with open(self.hosts_file) as f:
                hosts = discovery.parse(f.read(), source=self.hosts_file)
        except OSError as e:
            raise UsageError(f"--hosts-file={self.hosts_file}: {e.strerror}; write one "
                             "host:slots per line (launch/discover_hosts.sh reads it)") from e
        if not hosts:
            raise UsageError(f"--hosts-file={self.hosts_file}: names no host")
        return hosts

    def slots_per_host(self) -> int:
        """The most ranks one host of the file runs: what the per-node thread plan is for."""
        return max(slots for _, slots in self.hosts())


def launch_env(plan_env: Dict[str, str], environ) -> Dict[str, str]:
    """The launcher's environment: `environ` with the plan's variables, except the COMM_ENV
    and RING_ENV tunings a user has already set (to compare settings, or for another MPI)."""
    return dict(environ, **{k: v for k, v in plan_env.items()
                            if not ((k in COMM_ENV or k in RING_ENV) and k in environ)})


def command(plan: Plan, launcher: str, program: Sequence[str], hosts: Optional[str] = None,
            hostfile: Optional[str] = None, mpi: str = "pmix",
            elastic: Optional[Elastic] = None,
            net: Optional[network.Choice] = None) -> List[str]:
    """The launcher command line that runs `program` on every rank with this plan; `net`, the
    network the hosts share (network.plan_network), goes to Open MPI and Horovod alike."""
    n = plan.total_ranks
    if elastic is not None:
        if launcher != "horovodrun":
            raise UsageError(f"elastic mode needs horovodrun, not {launcher}")
        elastic.check()
        script = os.path.join(CHECKOUT,
                              "launch", "discover_hosts.sh")
        # Gloo, not MPI (Horovod Elastic needs it), so no --bind-to: threads come from the env.
        names = elastic.network_interfaces or (net.names if net else None)
        nics = ["--network-interfaces", names] if names else []
        return (["horovodrun", "-np", str(elastic.np), "--min-np", str(elastic.min_np), "--max-np",
                 str(elastic.max_np), "--host-discovery-script", script] + nics + list(program) +
                ["--elastic"])
    if launcher == "horovodrun":
        host_arg = ["-H", hosts or f"localhost:{plan.ranks_per_node}"]
        if hostfile:
            host_arg = ["-hostfile", hostfile]
        binding = f"--map-by {mpi_map_by(plan)} --bind-to core"
        nics = []
        if net and net.names:  # Horovod hands the names to Open MPI and Gloo both
            nics = ["--network-interfaces", net.names]
        elif net:  # names differ between hosts: Open MPI takes the network itself
            binding += " " + " ".join(network.open_mpi_args(net))
        return (["horovodrun", "-np", str(n)] + host_arg + nics + [f"--binding-args={binding}"]
                + list(program))
    if launcher == "mpirun":  # Open MPI
        where = (["-H", hosts] if hosts else []) + (["--hostfile", hostfile] if hostfile else [])
        where += network.open_mpi_args(net) if net else []
        return open_mpi(n, mpi_map_by(plan), plan.env, ["--report-bindings"] + where) + list(
            program)
    if launcher == "intel-mpirun":  # Intel MPI: pinning by domain, env through -genv
        cmd = ["mpirun", "-n", str(n), "-ppn", str(plan.ranks_per_node),
               "-genv", "I_MPI_PIN_DOMAIN", f"{plan.cpus_per_rank}:compact"]
        if hosts:
            cmd += ["-hosts", hosts]
        if hostfile:
            cmd += ["-f", hostfile]
        for key in sorted(plan.env):
            cmd += ["-genv", key, plan.env[key]]
        return cmd + list(program)
    if launcher == "srun":
        return ["srun", f"--nodes={plan.nodes}", f"--ntasks={n}",
                f"--ntasks-per-node={plan.ranks_per_node}",
                f"--cpus-per-task={plan.cpus_per_rank}", "--cpu-bind=cores",
                f"--mpi={mpi}"] + list(program)
    raise UsageError(f"--launcher={launcher}: use one of {', '.join(LAUNCHERS)}")


def describe(plan: Plan) -> str:
    t = plan.topology
    lines = [f"topology: {t.sockets} socket(s) x {t.cores_per_socket} cores x "
             f"{t.threads_per_core} thread(s), {t.numa_nodes} NUMA node(s)",
             f"plan: {plan.nodes} node(s) x {plan.ranks_per_node} rank(s) = {plan.total_ranks}; "
             f"{plan.cores_per_rank} core(s)/rank; intra-op {plan.intra_op_threads}, inter-op "
             f"{plan.inter_op_threads}",
             "local_rank  sockets  cores"]
    for s in plan.slots:
        cores = (f"{s.cores[0]}-{s.cores[-1]}" if len(s.cores) > 1 else str(s.cores[0]))
        lines.append(f"{s.local_rank:>10}  {','.join(map(str, s.sockets)):>7}  {cores}")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


# --- CLI --------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resnet.launch.plan",
        description="Plan ranks, cores and threads for this node (or a stated one) and launch "
                    "train_dist.py. Everything after -- goes to train_dist.py.")
    p.add_argument("--launcher", choices=LAUNCHERS, default="horovodrun")
    p.add_argument("--ranks_per_node", type=int, default=None,
                   help="default: one per socket")
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
    p.add_argument("--dry_run", action="store_true", help="print the command and env, run nothing")
    p.add_argument("--program", default=None,
                   help="what each rank runs (default: this venv's python train_dist.py)")
    return p


def host_names(hosts: Optional[str], hostfile: Optional[str]) -> List[str]:
    """The hosts of -H host:slots,... or of a hostfile (`host`, `host:N` or `host slots=N`)."""
    if hosts:
        return [h.split(":")[0] for h in hosts.split(",") if h]
    if hostfile:
        try:
            with open(hostfile) as f:
                lines = [ln.split("#")[0].strip() for ln in f]
        except OSError as e:
            raise UsageError(f"--hostfile={hostfile}: {e.strerror}") from e
        return [ln.split()[0].split(":")[0] for ln in lines if ln]
    return []


def _network(args, elastic: Optional[Elastic]) -> Optional[network.Choice]:
    """The network for a multi-host launch (None on one machine, or under srun/Intel MPI,
    which choose their own fabric), decided by asking every host."""
    if args.launcher not in ("horovodrun", "mpirun"):
        return None
    if args.sockets is not None or elastic and args.network_interfaces:
        # A stated topology plans for another machine: its hosts are not asked. Named
        # interfaces in elastic mode go as they are: its hosts may not all be up yet.
        return None
    hosts = ([h for h, _ in elastic.hosts()] if elastic else
             host_names(args.hosts, args.hostfile))
    return network.plan_network(hosts or ["localhost"], args.network_interfaces)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = _parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        if args.sockets is not None or args.cores_per_socket is not None:
            if args.sockets is None or args.cores_per_socket is None:
                raise UsageError("--sockets and --cores_per_socket go together")
            t = topo.Topology(args.sockets, args.cores_per_socket, args.threads_per_core,
                              args.numa_nodes or args.sockets)
        else:
            t = topo.read()
        elastic = None
        if args.min_np is not None or args.max_np is not None or args.hosts_file:
            if args.hosts_file is None:
                raise UsageError("elastic mode needs --hosts_file (host:slots lines)")
            np_ = args.ranks_per_node or args.min_np or 1
            elastic = Elastic(np_, args.min_np or np_, args.max_np or np_,
                              os.path.abspath(args.hosts_file), args.network_interfaces)
        # Elastic: -np counts ranks over all hosts; the thread plan is for one host's ranks.
        per_node = elastic.slots_per_host() if elastic else args.ranks_per_node or t.sockets
        nodes = args.nodes or len(host_names(args.hosts, args.hostfile)) or 1
        if elastic is None and args.ranks_per_node is None and args.hosts:
            per_node = int(args.hosts.split(",")[0].partition(":")[2] or t.sockets)
        plan = make(t, per_node, nodes, openmp=openmp_runtime_present())
        root = CHECKOUT
        program = (shlex.split(args.program) if args.program else
                   [sys.executable, os.path.join(root, "train_dist.py")]) + train_args
        net = _network(args, elastic)
        cmd = command(plan, args.launcher, program, args.hosts, args.hostfile, args.mpi, elastic,
                      net)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(describe(plan))
    if net:
        print(network.describe(net))
    print("env: " + " ".join(f"{k}={v}" for k, v in sorted(plan.env.items())))
    print("command: " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    env = launch_env(plan.env, os.environ)
    if elastic is not None:
        env["ELASTIC_HOSTS_FILE"] = elastic.hosts_file
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
