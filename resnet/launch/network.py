"""Which network the ranks of a multi-host job talk over, decided before anything starts.

Open MPI and Gloo otherwise use every interface a host has: a host with a second interface that
the other hosts cannot reach (a management network, a docker bridge, an unplugged InfiniBand
port's IPoIB address) makes the others try to connect to it, and the job hangs in its first
collective with nothing said. So the launch plan asks every host for its IPv4 interfaces (over
ssh, each with a time limit: an unreachable host is an error at once, not a hang), keeps the
networks every host has its own address in and can be reached through, and passes them to both:
Open MPI's btl_tcp_if_include and oob_tcp_if_include (as the network, whatever the interface
is called on each host) and Horovod's --network-interfaces / HOROVOD_GLOO_IFACE (by name, which
must then be the same on every host). --network-interfaces names them instead.

A network counts as shared only when the hosts can reach one another through it:
  - container and VM bridges (Docker's docker0 and br-*, libvirt's virbr*, Podman's, Kubernetes'
    CNI, Flannel's, Calico's) are left out unless named: Docker gives docker0 172.17.0.1/16 on
    every host, which looks shared and leads each host to itself (Open MPI's FAQ names docker0
    and virbr0 as the usual cause of such hangs);
  - a network in which two hosts have the same address is left out, whatever its name;
  - each remaining candidate is probed: a TCP connection from this host to every other host's
    address in it (ssh's port; a refusal is an answer too), each with a time limit; then, over
    the same ssh, from each other host back to this one's address in it (to the first host's
    where this one is not a host), so that a network this host reaches but the hosts cannot
    use between them (a login node on two fabrics, a firewall that lets only incoming
    connections through) is left out too.
The remote commands start the way Open MPI starts its daemons: through $OMPI_MCA_plm_rsh_agent
when it is set, else ssh, with $OMPI_MCA_plm_rsh_args and horovodrun's --ssh-port and
--ssh-identity-file (which Horovod hands Open MPI as plm_rsh_args); the probes go to that port.

Kept free of TensorFlow, like the rest of resnet/launch/.
"""

import concurrent.futures
import dataclasses
import errno
import functools
import ipaddress
import os
import re
import shlex
import socket
import subprocess
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from resnet.errors import UsageError

SSH_TIMEOUT_S = 15  # per host: connecting and listing its interfaces
PROBE_TIMEOUT_S = 3  # per address: a TCP connection within a LAN answers in milliseconds
PROBE_PORT = 22  # ssh's: open on every host the launch reaches; a refusal still proves a route
# Bridges that container and VM runtimes create on each host they run on: never a way to
# another host, often at the same address on all of them.
VIRTUAL_BRIDGE = re.compile(r"^(docker\d*|br-[0-9a-f]{12}|virbr\d+(-nic)?|podman\d+|cni\d*|"
                            r"cni-podman\d+|flannel[.\d]*|cali[0-9a-f]*|kube-bridge|weave|"
                            r"lxcbr\d+|lxdbr\d+|cilium_\w+|tunl\d+)$")

Addresses = List[Tuple[str, ipaddress.IPv4Interface]]  # (interface name, address/prefix)


@dataclasses.dataclass(frozen=True)
class Ssh:
    """horovodrun's own ssh options (--ssh-port, --ssh-identity-file), for every remote command
    the plan runs and for the launcher it starts."""
    port: Optional[int] = None
    identity_file: Optional[str] = None

    def args(self) -> List[str]:
        return ((["-p", str(self.port)] if self.port else []) +
                (["-i", self.identity_file] if self.identity_file else []))

    def horovodrun_args(self) -> List[str]:
        return ((["--ssh-port", str(self.port)] if self.port else []) +
                (["--ssh-identity-file", self.identity_file] if self.identity_file else []))


def ssh_port(environ: Mapping[str, str] = os.environ, ssh: Ssh = Ssh()) -> int:
    """The port the hosts' sshd listens on, which the probes connect to: --ssh-port, else a
    `-p N` in $OMPI_MCA_plm_rsh_args or the agent's own arguments, else 22."""
    if ssh.port:
        return ssh.port
    words = _agent(environ) + shlex.split(environ.get("OMPI_MCA_plm_rsh_args", ""))
    ports = [w for prev, w in zip(words, words[1:]) if prev == "-p" and w.isdigit()]
    return int(ports[-1]) if ports else PROBE_PORT


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


def _agent(environ: Mapping[str, str]) -> List[str]:
    """$OMPI_MCA_plm_rsh_agent's first choice ('ssh : rsh' lists several), as words; [] unset."""
    return shlex.split(environ.get("OMPI_MCA_plm_rsh_agent", "").split(":")[0])


def remote_command(host: str, environ: Mapping[str, str] = os.environ,
                   ssh: Ssh = Ssh()) -> List[str]:
    """How to run a command on `host`, as Open MPI would: $OMPI_MCA_plm_rsh_agent (its first
    choice where it lists several, 'ssh : rsh'), else ssh, followed by $OMPI_MCA_plm_rsh_args
    and `ssh`'s options. ssh gets batch mode and a connect time limit; another agent is called
    as it is."""
    cmd = _agent(environ) or ["ssh"]
    if os.path.basename(cmd[0]) == "ssh":
        cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}"]
    return cmd + shlex.split(environ.get("OMPI_MCA_plm_rsh_args", "")) + ssh.args() + [host]


def list_addresses(host: str, run: Callable = subprocess.run,
                   environ: Mapping[str, str] = os.environ, ssh: Ssh = Ssh()) -> Addresses:
    """The host's IPv4 addresses: here directly, elsewhere over ssh, within SSH_TIMEOUT_S."""
    cmd = ["ip", "-o", "-4", "addr", "show"]
    if not is_local(host):
        cmd = remote_command(host, environ, ssh) + cmd
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


def probe(address: str, port: int = PROBE_PORT, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when `address` answers a TCP connection from here (accepted or refused), else why
    not (a time-out, no route)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return None  # the host answered: the route works, the port is merely closed
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return os.strerror(e.errno) if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) \
            else str(e)


# Run by each host's shell (stdin, so that no agent's quoting matters): one line per address,
# "<address> ok", or "<address> <exit status> <what bash said>". bash's /dev/tcp connects.
_PROBE_BACK = """for a in {addresses}; do
  if out=$(timeout {timeout} bash -c "exec 3<>/dev/tcp/$a/{port}" 2>&1); then echo "$a ok"
  else rc=$?; echo "$a $rc" $out; fi
done
"""


def probe_back(host: str, addresses: Sequence[str], port: int = PROBE_PORT,
               run: Callable = subprocess.run, environ: Mapping[str, str] = os.environ,
               ssh: Ssh = Ssh()) -> Dict[str, Optional[str]]:
    """probe() from `host` (over the remote command) to each of `addresses`: address -> None
    where it answered (accepted or refused), else why not. A host without bash or timeout
    cannot say, and counts as answered: the check is the cheap part of the choice, not a
    requirement on the hosts."""
    script = _PROBE_BACK.format(addresses=" ".join(addresses), timeout=PROBE_TIMEOUT_S,
                                port=port)
    try:
        out = run(remote_command(host, environ, ssh) + ["sh", "-s"], input=script,
                  capture_output=True, text=True,
                  timeout=SSH_TIMEOUT_S + PROBE_TIMEOUT_S * len(addresses) + 5)
    except subprocess.TimeoutExpired:
        raise UsageError(f"host {host}: no answer over ssh while probing back from it; check "
                         "that it is up and reachable from here, or leave it out of --hosts")
    answers = {}
    for line in out.stdout.splitlines():
        address, _, rest = line.partition(" ")
        status, _, said = rest.partition(" ")
        if address not in addresses:
            continue
        if status == "ok" or status == "127" or "refused" in said.lower():
            answers[address] = None  # 127: no bash or timeout there
        elif status == "124":
            answers[address] = f"no answer within {PROBE_TIMEOUT_S:g} s"
        else:
            answers[address] = said.rsplit(": ", 1)[-1].strip() or f"exit {status}"
    return {a: answers.get(a) for a in addresses}


def choose(per_host: Dict[str, Addresses], wanted: Optional[str] = None,
           reachable: Optional[Callable[[str], Optional[str]]] = None,
           reachable_back: Optional[Callable[[str, List[str]], Dict[str, Optional[str]]]] = None
           ) -> Choice:
    """The networks every host has its own address in (loopback and container bridges left
    out) and, with `reachable` (probe), answers in from here and, with `reachable_back`
    (probe_back: host, addresses -> why not), from each host back to this one (the first
    host, when this one is not a host); or the interfaces `wanted` names, checked to exist on
    every host."""
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
    left_out = {}  # "name (network)" -> why
    usable = {}
    for host in hosts:
        usable[host] = []
        for name, a in per_host[host]:
            if a.is_loopback:
                continue
            if VIRTUAL_BRIDGE.match(name):
                left_out[f"{name} ({a.network})"] = "a container or VM bridge"
            else:
                usable[host].append((name, a))
    shared = None
    for host in hosts:
        nets = {a.network for _, a in usable[host]}
        shared = nets if shared is None else shared & nets
    shared = shared or set()
    dropped = set()  # every host has them, and they are left out for a reason of their own
    for net in sorted(shared, key=str):
        owners = {}
        for host in hosts:
            for name, a in usable[host]:
                if a.network == net:
                    owners.setdefault(a.ip, []).append(host)
        twice = {ip: hs for ip, hs in owners.items() if len(hs) > 1}
        if twice:
            ip, hs = next(iter(twice.items()))
            left_out[f"{_name_in(usable, hosts, net)} ({net})"] = \
                f"{' and '.join(hs)} have the same address {ip} in it"
            dropped.add(net)
        elif reachable:
            for host in hosts:
                if is_local(host):
                    continue
                ip = next(str(a.ip) for _, a in usable[host] if a.network == net)
                why = reachable(ip)
                if why:
                    left_out[f"{_name_in(usable, hosts, net)} ({net})"] = \
                        f"{host}'s {ip} is not reachable from here: {why}"
                    dropped.add(net)
                    break
    shared -= dropped
    if reachable_back and shared:
        target = next((h for h in hosts if is_local(h)), hosts[0])
        ips = {net: next(str(a.ip) for _, a in usable[target] if a.network == net)
               for net in sorted(shared, key=str)}
        others = [h for h in hosts if h != target and not is_local(h)]
        with concurrent.futures.ThreadPoolExecutor(max(1, min(16, len(others)))) as pool:
            answers = dict(zip(others, pool.map(
                lambda h: reachable_back(h, list(ips.values())), others)))
        for host in others:
            for net, ip in ips.items():
                why = answers[host].get(ip)
                if why and net not in dropped:
                    where = "here" if is_local(target) else target
                    left_out[f"{_name_in(usable, hosts, net)} ({net})"] = \
                        f"{host} cannot reach {where} ({ip}) through it: {why}"
                    dropped.add(net)
        shared -= dropped
    for host in hosts:
        for name, a in usable[host]:
            if a.network not in shared and a.network not in dropped:
                left_out[f"{name} ({a.network})"] = "not every host has it"
    if not shared:
        listing = "; ".join(f"{h}: " + ", ".join(f"{n} {a}" for n, a in per_host[h]) for h in hosts)
        reasons = "".join(f"; {k}: {why}" for k, why in sorted(left_out.items()))
        raise UsageError("the hosts share no IPv4 network they can reach each other through, so "
                         f"their ranks cannot connect ({listing}{reasons}); fix the network or "
                         "name the interface with --network-interfaces")
    nets = sorted(shared, key=str)
    names = [_name_in(usable, hosts, net) for net in nets]
    why = f"the network{'s' * (len(nets) > 1)} every host has an address in"
    if left_out:
        why += "; left out: " + ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items()))
    return Choice(tuple(names), tuple(str(n) for n in nets), why)


def _name_in(per_host: Dict[str, Addresses], hosts, net) -> str:
    """The interface's name in `net`, when every host calls it the same, else ''."""
    on_each = {next(n for n, a in per_host[h] if a.network == net) for h in hosts}
    return on_each.pop() if len(on_each) == 1 else ""


def plan_network(hosts: Sequence[str], wanted: Optional[str] = None,
                 run: Callable = subprocess.run, reachable: Optional[Callable] = probe,
                 environ: Mapping[str, str] = os.environ, ssh: Ssh = Ssh()) -> Optional[Choice]:
    """The choice for these hosts, or None when every rank stays on this machine and no
    interface was named. `reachable`: probe (then probe_back too), or None to ask nothing
    but each host's addresses."""
    if all(is_local(h) for h in hosts):
        return Choice(tuple(wanted.split(",")), (), "named by --network-interfaces",
                      named=True) if wanted else None
    names = list(dict.fromkeys(hosts))
    with concurrent.futures.ThreadPoolExecutor(min(16, len(names))) as pool:
        listed = list(pool.map(lambda h: list_addresses(h, run, environ, ssh), names))
    port = ssh_port(environ, ssh)
    back = None
    if reachable is probe:
        reachable = functools.partial(probe, port=port)
    if reachable is not None:
        def back(host, addresses):
            return probe_back(host, addresses, port, run, environ, ssh)
    return choose(dict(zip(names, listed)), wanted, reachable, back)


def open_mpi_env(environ: Mapping[str, str] = os.environ, wanted: Optional[str] = None,
                 run: Callable = subprocess.run) -> Tuple[Dict[str, str], str]:
    """For a launch that lists no hosts (srun, or mpirun inside a Slurm allocation, which reads
    the hosts itself): Slurm's nodes may not take ssh from each other, so instead of asking
    them, Open MPI's TCP transport is steered by variables from here: the interfaces
    `wanted` names, else every interface but loopback and the networks of this host's container
    and VM bridges (Docker gives docker0 the same 172.17.0.0/16 on every host). Returns
    (variables for the ranks, what the plan says); nothing where you set Open MPI's own."""
    keys = [f"OMPI_MCA_{p}_tcp_if_{w}" for p in ("btl", "oob") for w in ("include", "exclude")]
    if any(environ.get(k) for k in keys):
        return {}, "network: Open MPI's, as your OMPI_MCA_*_tcp_if_* variables say"
    if wanted:
        return ({"OMPI_MCA_btl_tcp_if_include": wanted, "OMPI_MCA_oob_tcp_if_include": wanted},
                f"network: {wanted}: named by --network-interfaces")
    bridges = [(n, a) for n, a in list_addresses("localhost", run) if VIRTUAL_BRIDGE.match(n)]
    # By network, not name: a name another host lacks would make Open MPI warn on it, and
    # Docker's networks are the same on every host where its bridges' names (br-<id>) are not.
    value = ",".join(["127.0.0.1/8"] + sorted({str(a.network) for _, a in bridges}))
    why = ", ".join(f"{n} ({a.network})" for n, a in bridges)
    return ({"OMPI_MCA_btl_tcp_if_exclude": value, "OMPI_MCA_oob_tcp_if_exclude": value},
            "network: every interface but loopback" + (
                f"; left out: {why}: a container or VM bridge" if bridges else ""))


def open_mpi_args(choice: Choice) -> List[str]:
    value = choice.names if choice.named else ",".join(choice.networks)
    return ["--mca", "btl_tcp_if_include", value, "--mca", "oob_tcp_if_include", value]


def describe(choice: Choice) -> str:
    names = choice.names or "named differently on different hosts"
    nets = f"{', '.join(choice.networks)} " if choice.networks else ""
    return f"network: {nets}({names}): {choice.why}"
