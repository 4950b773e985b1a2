"""Which network the ranks of a multi-host job talk over, decided before anything starts.

Open MPI and Gloo otherwise use every interface a host has: a host with a second interface that
the other hosts cannot reach (a management network, a docker bridge, an unplugged InfiniBand
port's IPoIB address) makes the others try to connect to it, and the job hangs in its first
collective with nothing said. So the launch plan asks every host for its IPv4 interfaces (over
ssh, each with a time limit: an unreachable host is an error at once, not a hang), keeps the
networks that every host has an address in, and passes the choice to both: Open MPI's
btl_tcp_if_include and oob_tcp_if_include (as the network, which works whatever the interface
is called on each host) and Horovod's --network-interfaces / HOROVOD_GLOO_IFACE (by name, which
must then be the same on every host). --network-interfaces names them instead.

Kept free of TensorFlow, like the rest of resnet/launch/.
"""

import dataclasses
import ipaddress
import socket
import subprocess
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from resnet.errors import UsageError

SSH_TIMEOUT_S = 15  # per host: connecting and listing its interfaces

Addresses = List[Tuple[str, ipaddress.IPv4Interface]]  # (interface name, address/prefix)


@dataclasses.dataclass(frozen=True)
class Choice:
    interfaces: Tuple[str, ...]  # names, the same on every host ('' where they differ)
    networks: Tuple[str, ...]  # CIDR, e.g. 10.0.0.0/24
    why: str
    named: bool = False  # given by --network-interfaces: Open MPI gets the names too

    @property
    def names(self) -> Optional[str]:
        return ",".join(self.interfaces) if all(self.interfaces) else None


def parse_ip_addr(text: str) -> Addresses:
    """`ip -o -4 addr show` lines -> [(interface, address/prefix)]."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if "inet" in fields:
            name = fields[1].split("@")[0]
            out.append((name, ipaddress.IPv4Interface(fields[fields.index("inet") + 1])))
    return out


def is_local(host: str) -> bool:
    return host in ("localhost", socket.gethostname()) or host.startswith("127.")


def list_addresses(host: str, run: Callable = subprocess.run) -> Addresses:
    """The host's IPv4 addresses: here directly, elsewhere over ssh, within SSH_TIMEOUT_S."""
    cmd = ["ip", "-o", "-4", "addr", "show"]
    if not is_local(host):
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}", host] + cmd
    try:
        out = run(cmd, capture_output=True, text=True, timeout=SSH_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired:
        raise UsageError(f"host {host}: no answer over ssh within {SSH_TIMEOUT_S + 5} s; check "
                         "that it is up and reachable from here, or leave it out of --hosts")
    if out.returncode:
        raise UsageError(f"host {host}: cannot list its network interfaces over ssh "
                         f"({out.stderr.strip()[-300:] or 'exit ' + str(out.returncode)}); "
                         "every host must accept ssh from this one without a password")
    return parse_ip_addr(out.stdout)


def choose(per_host: Dict[str, Addresses], wanted: Optional[str] = None) -> Choice:
    """The networks every host has an address in (loopback left out), or the interfaces
    `wanted` names, checked to exist on every host."""
    hosts = sorted(per_host)
    if wanted:
        names = tuple(wanted.split(","))
        for host in hosts:
            missing = [n for n in names if n not in {name for name, _ in per_host[host]}]
            if missing:
                raise UsageError(f"--network-interfaces={wanted}: {host} has no "
                                 f"{', '.join(missing)} (it has "
                                 f"{', '.join(sorted({n for n, _ in per_host[host]}))})")
        nets = sorted({str(a.network) for n, a in per_host[hosts[0]] if n in names})
        return Choice(names, tuple(nets), "named by --network-interfaces", named=True)
    shared = None
    for host in hosts:
        nets = {a.network for _, a in per_host[host] if not a.is_loopback}
        shared = nets if shared is None else shared & nets
    if not shared:
        listing = "; ".join(f"{h}: " + ", ".join(f"{n} {a}" for n, a in per_host[h]) for h in hosts)
        raise UsageError("the hosts share no IPv4 network, so their ranks cannot reach each "
                         f"other ({listing}); fix the network or name the interface with "
                         "--network-interfaces")
    nets = sorted(shared, key=str)
    names = []
    for net in nets:
        on_each = {next(n for n, a in per_host[h] if a.network == net) for h in hosts}
        names.append(on_each.pop() if len(on_each) == 1 else "")
    others = sorted({f"{n} ({a.network})" for h in hosts for n, a in per_host[h]
                     if not a.is_loopback and a.network not in shared})
    why = f"the network{'s' * (len(nets) > 1)} every host has an address in"
    if others:
        why += f"; not shared, so left out: {', '.join(others)}"
    return Choice(tuple(names), tuple(str(n) for n in nets), why)


def plan_network(hosts: Sequence[str], wanted: Optional[str] = None,
                 run: Callable = subprocess.run) -> Optional[Choice]:
    """The choice for these hosts, or None when every rank stays on this machine and no
    interface was named."""
    if all(is_local(h) for h in hosts):
        return Choice(tuple(wanted.split(",")), (), "named by --network-interfaces",
                      named=True) if wanted else None
    return choose({h: list_addresses(h, run) for h in dict.fromkeys(hosts)}, wanted)


def open_mpi_args(choice: Choice) -> List[str]:
    value = choice.names if choice.named else ",".join(choice.networks)
    return ["--mca", "btl_tcp_if_include", value, "--mca", "oob_tcp_if_include", value]


def describe(choice: Choice) -> str:
    names = choice.names or "named differently on different hosts"
    nets = f"{', '.join(choice.networks)} " if choice.networks else ""
    return f"network: {nets}({names}): {choice.why}"
