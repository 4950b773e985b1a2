"""One command line per launcher: what starts `program` on every rank of a NodeLayout.

COMMANDS maps each launcher to its builder; each builder says how that launcher binds ranks to
cores and passes the rank environment on (Open MPI by -x names, Intel MPI by -genv, srun and
horovodrun's Gloo by the environment they inherit).
"""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from resnet.errors import UsageError
from resnet.launch import CHECKOUT, hosts as hosts_lib, network
from resnet.launch.layout import NodeLayout, mpi_map_by


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
        # A host without slots gets one, as launch/discover_hosts.sh gives it by default.
        return hosts_lib.with_slots(hosts_lib.read_file(self.hosts_file, "--hosts-file"), 1)

    def slots_per_host(self) -> int:
        """The most ranks one host of the file runs: what the per-node thread plan is for."""
        return max(slots for _, slots in self.hosts())


@dataclasses.dataclass(frozen=True)
class Where:
    """Where the ranks go and how they talk: what every launcher's command is built from."""
    hosts: Optional[str] = None  # -H host:slots,...
    hostfile: Optional[str] = None
    mpi: str = "pmix"  # srun --mpi=
    net: Optional[network.Choice] = None  # the network the hosts share (network.plan_network)
    ssh: network.Ssh = network.Ssh()  # horovodrun's --ssh-port and --ssh-identity-file


def _elastic(layout: NodeLayout, program, where: Where, elastic: Elastic) -> List[str]:
    elastic.check()
    script = os.path.join(CHECKOUT, "launch", "discover_hosts.sh")
    # Gloo, not MPI (Horovod Elastic needs it), so no --bind-to: threads come from the env.
    names = elastic.network_interfaces or (where.net.names if where.net else None)
    nics = ["--network-interfaces", names] if names else []
    return (["horovodrun", "-np", str(elastic.np), "--min-np", str(elastic.min_np), "--max-np",
             str(elastic.max_np), "--host-discovery-script", script] + nics +
            where.ssh.horovodrun_args() + list(program) +
            ["--elastic"])


def _horovodrun(layout: NodeLayout, program, where: Where) -> List[str]:
    host_arg = (["-hostfile", where.hostfile] if where.hostfile else
                ["-H", where.hosts or f"localhost:{layout.ranks_per_node}"])
    binding = f"--map-by {mpi_map_by(layout)} --bind-to core"
    nics = []
    if where.net and where.net.names:  # Horovod hands the names to Open MPI and Gloo both
        nics = ["--network-interfaces", where.net.names]
    elif where.net:  # names differ between hosts: Open MPI takes the network itself
        binding += " " + " ".join(network.open_mpi_args(where.net))
    return (["horovodrun", "-np", str(layout.total_ranks)] + host_arg + nics +
            where.ssh.horovodrun_args() + [f"--binding-args={binding}"] + list(program))


def _mpirun(layout: NodeLayout, program, where: Where) -> List[str]:  # Open MPI
    at = (["-H", where.hosts] if where.hosts else []) + (
        ["--hostfile", where.hostfile] if where.hostfile else [])
    at += network.open_mpi_args(where.net) if where.net else []
    return open_mpi(layout.total_ranks, mpi_map_by(layout), layout.env,
                    ["--report-bindings"] + at) + list(program)


def _intel_mpirun(layout: NodeLayout, program, where: Where) -> List[str]:
    # Intel MPI: pinning by domain, the environment through -genv.
    cmd = ["mpirun", "-n", str(layout.total_ranks), "-ppn", str(layout.ranks_per_node),
           "-genv", "I_MPI_PIN_DOMAIN", f"{layout.cpus_per_rank}:compact"]
    cmd += ["-hosts", where.hosts] if where.hosts else []
    cmd += ["-f", where.hostfile] if where.hostfile else []
    for key in sorted(layout.env):
        cmd += ["-genv", key, layout.env[key]]
    return cmd + list(program)


def _srun(layout: NodeLayout, program, where: Where) -> List[str]:
    return ["srun", f"--nodes={layout.nodes}", f"--ntasks={layout.total_ranks}",
            f"--ntasks-per-node={layout.ranks_per_node}",
            f"--cpus-per-task={layout.cpus_per_rank}", "--cpu-bind=cores",
            f"--mpi={where.mpi}"] + list(program)


COMMANDS: Dict[str, Callable[[NodeLayout, Sequence[str], Where], List[str]]] = {
    "horovodrun": _horovodrun, "mpirun": _mpirun, "srun": _srun, "intel-mpirun": _intel_mpirun}
LAUNCHERS = tuple(COMMANDS)


def command(layout: NodeLayout, launcher: str, program: Sequence[str], where: Where = Where(),
            elastic: Optional[Elastic] = None) -> List[str]:
    """The launcher command line that runs `program` on every rank with this layout."""
    if launcher not in COMMANDS:
        raise UsageError(f"--launcher={launcher}: use one of {', '.join(LAUNCHERS)}")
    if elastic is not None:
        if launcher != "horovodrun":
            raise UsageError(f"elastic mode needs horovodrun, not {launcher}")
        return _elastic(layout, program, where, elastic)
    return COMMANDS[launcher](layout, program, where)
