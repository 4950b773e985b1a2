"""An emulated cluster on this one machine, for tests that need ranks on several hosts.

Each host is a Linux network namespace with its own hostname (a UTS namespace), its own
/etc/hosts (bound over /etc/hosts in a mount namespace of its own) and an sshd, so Open MPI and
horovodrun start remote ranks over ssh exactly as on a cluster. The hosts' eth0 are veth pairs
joined by a bridge in a namespace of its own (the switch); each eth0 can be shaped (tc tbf: a
rate) and cut (its switch port down). The file system is shared, as NFS would be.

Only addresses inside the namespaces made here are used (10.77.0.0/24 by default; a second,
unrouted network for the interface tests), nothing is configured in the root namespace, and
stop() kills every process inside the namespaces (by pid, `ip netns pids`), deletes them and
their /etc/netns folders, even when a test failed. Processes run on a host through run()/popen(),
which enter the host's namespaces with nsenter and keep this process's environment; ssh between
hosts goes through a wrapper (first on PATH) that uses this cluster's key and config.

  python tools/netcluster.py --hosts 2      # start one by hand; Ctrl-C stops and removes it
"""

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

PACKAGES = ("openssh-server", "iproute2", "util-linux")


def _sh(cmd: Sequence[str], check: bool = True, timeout: float = 60, **kwargs):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def rate_bits(rate: str) -> int:
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bit": 1}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return int(float(rate[:-len(unit)]) * scale)
    raise ValueError(f"{rate!r}: give a rate such as 1gbit or 100mbit")


def unavailable() -> Optional[str]:
    """Why a cluster cannot be made here, or None. Installs openssh-server when it is missing
    (as root, from Debian's packages, as the Slurm tests install slurm-wlm)."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if not shutil.which("sshd") and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode:
                return f"cannot install {' '.join(PACKAGES)}: {proc.stderr.strip()[-300:]}"
    for tool in ("sshd", "ip", "nsenter", "unshare", "tc"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = f"rcprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          timeout=30)
    if made.returncode:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=30)
    return None


def remove_stale() -> List[str]:
    """Remove the namespaces of clusters whose owner process is gone (a test run killed before
    its clean-up): kill what runs in them, delete them. Returns the names removed."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    removed = []
    for ns in (line.split()[0] for line in out.stdout.splitlines() if line.strip()):
        tag = ns.split("-")[0]
        if not (tag.startswith("rc") and tag[2:].isdigit()) or os.path.exists(f"/proc/{tag[2:]}"):
            continue
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=30).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
        shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
        removed.append(ns)
    return removed


class Cluster:
    """Hosts node1..nodeN on one bridge. start() and stop() bracket its life."""

    def __init__(self, hosts: int = 2, subnet: str = "10.77.0", workdir: Optional[str] = None,
                 docker_bridge: bool = False):
        """`docker_bridge`: every host also carries Docker's default bridge as Docker leaves it,
        docker0 at 172.17.0.1/16, the same address on each (and leading nowhere else)."""
        self.names = [f"node{i}" for i in range(1, hosts + 1)]
        self.docker_bridge = docker_bridge
        self.subnet = subnet
        self.tag = f"rc{os.getpid()}"
        self.dir = workdir or tempfile.mkdtemp(prefix="netcluster-")
        self.bin = os.path.join(self.dir, "bin")
        self.sshd_pids: Dict[str, int] = {}
        self.extra_hosts: Dict[str, str] = {}  # name -> address, for /etc/hosts

    # --- names -------------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.names.index(host) + 1}"

    def namespaces(self) -> List[str]:
        return [self.ns(h) for h in self.names] + [self.switch]

    # --- start and stop ----------------------------------------------------------------------

    def start(self) -> "Cluster":
        remove_stale()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # A SIGTERM (a CI time-out, a kill) unwinds like Ctrl-C, so stop() still runs.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            self._keys()
            _sh(["ip", "netns", "add", self.switch])
            self._ip(self.switch, "link", "add", "br0", "type", "bridge")
            self._ip(self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.names, 1):
                self._add_host(host, i)
            for host in self.names:
                self._start_sshd(host)
            self.wait_ssh()
        except BaseException:
            self.stop()
            raise
        return self

    def _add_host(self, host: str, i: int) -> None:
        ns = self.ns(host)
        _sh(["ip", "netns", "add", ns])
        # The pair is made inside the host, its peer moved straight into the switch: nothing
        # of it ever sits in the root namespace.
        self._ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                 "netns", self.switch)
        self._ip(self.switch, "link", "set", f"p{i}", "master", "br0", "up")
        self._ip(ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
        self._ip(ns, "link", "set", "eth0", "up")
        self._ip(ns, "link", "set", "lo", "up")
        if self.docker_bridge:
            self._ip(ns, "link", "add", "docker0", "type", "bridge")
            self._ip(ns, "addr", "add", "172.17.0.1/16", "dev", "docker0")
            self._ip(ns, "link", "set", "docker0", "up")
        self._write_hosts(host)

    def _write_hosts(self, host: str) -> None:
        etc = os.path.join("/etc/netns", self.ns(host))
        os.makedirs(etc, exist_ok=True)
        lines = ["127.0.0.1 localhost"] + [f"{self.address(h)} {h}" for h in self.names]
        lines += [f"{addr} {name}" for name, addr in self.extra_hosts.items()]
        with open(os.path.join(etc, "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def _keys(self) -> None:
        os.makedirs(self.bin, exist_ok=True)
        key = os.path.join(self.dir, "id_ed25519")
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
             os.path.join(self.dir, "host_key")])
        shutil.copy(key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(os.path.join(self.dir, "ssh_config"), "w") as f:
            f.write(f"Host *\n  IdentityFile {key}\n  UserKnownHostsFile /dev/null\n"
                    "  StrictHostKeyChecking no\n  LogLevel ERROR\n  ConnectTimeout 10\n"
                    "  BatchMode yes\n")  # no keep-alives: ssh's defaults, as most clusters
        # What Open MPI and horovodrun call: `ssh` first on PATH. The real ssh reads its
        # config from the passwd home directory, not $HOME, hence -F.
        wrapper = os.path.join(self.bin, "ssh")
        with open(wrapper, "w") as f:
            # $NETCLUSTER_SSH_OPTS: options a cluster's own ssh config would hold (keep-alives)
            f.write(f"#!/bin/sh\nexec /usr/bin/ssh -F {self.dir}/ssh_config "
                    "$NETCLUSTER_SSH_OPTS \"$@\"\n")
        os.chmod(wrapper, 0o755)

    def _start_sshd(self, host: str) -> None:
        config = os.path.join(self.dir, f"sshd-{host}.conf")
        pid_file = os.path.join(self.dir, f"sshd-{host}.pid")
        with open(config, "w") as f:
            f.write(f"ListenAddress {self.address(host)}\nHostKey {self.dir}/host_key\n"
                    f"PidFile {pid_file}\nAuthorizedKeysFile {self.dir}/authorized_keys\n"
                    "PermitRootLogin yes\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    "LogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        # Into the host's network namespace, then a mount and a UTS namespace of its own: its
        # /etc/hosts and hostname, inherited by every session sshd starts. Not `ip netns exec`,
        # which also mounts a fresh /sys and so hides the cgroup file systems slurmd needs.
        hosts = os.path.join("/etc/netns", self.ns(host), "hosts")
        _sh(["nsenter", f"--net=/var/run/netns/{self.ns(host)}", "--", "unshare", "--mount",
             "--uts", "--propagation", "private", "sh", "-c",
             f"mount --bind {hosts} /etc/hosts && hostname {host} && "
             f"exec /usr/sbin/sshd -f {config}"])
        for _ in range(100):
            try:
                self.sshd_pids[host] = int(open(pid_file).read())
                return
            except (OSError, ValueError):  # not written yet, or half-written
                time.sleep(0.05)
        raise RuntimeError(f"sshd on {host} wrote no pid file")

    def wait_ssh(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        for host in self.names:
            while True:
                out = self.run(self.names[0], ["ssh", host, "hostname"], check=False,
                               timeout=20)
                if out.returncode == 0 and out.stdout.strip() == host:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"ssh {host} from {self.names[0]}: {out.stderr.strip()}")
                time.sleep(0.2)

    def stop(self) -> None:
        """Kill every process inside the namespaces, then delete them: a test that failed
        half-way leaves nothing running and no namespace behind. A second SIGTERM or Ctrl-C
        while it runs (`timeout` forwards its own SIGTERM to a child that `pkill` also hit) is
        held until it is done: interrupted, it left the namespaces and sshds behind."""
        main = threading.current_thread() is threading.main_thread()  # signal.signal's rule
        held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)
                if main}
        try:
            self._stop()
        finally:
            for s, handler in held.items():
                signal.signal(s, handler)

    def _stop(self) -> None:
        for _ in range(3):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for ns in self.namespaces():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
            shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pids(self) -> List[int]:
        pids = []
        for ns in self.namespaces():
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                 timeout=30)
            pids += [int(p) for p in out.stdout.split()]
        return pids

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- running things on a host ------------------------------------------------------------

    def env(self, **extra) -> Dict[str, str]:
        """This process's environment with the ssh wrapper first on PATH."""
        env = dict(os.environ, **extra)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '')}"
        # Open MPI's remote launcher: the same wrapper, named absolutely (its own remote
        # daemons do not inherit this PATH).
        env["OMPI_MCA_plm_rsh_agent"] = os.path.join(self.bin, "ssh")
        return env

    def _enter(self, host: str, cwd: Optional[str]) -> List[str]:
        # sshd's net, UTS and mount namespaces: the host's address, hostname and /etc/hosts.
        return ["nsenter", "--target", str(self.sshd_pids[host]), "--net", "--uts", "--mount",
                f"--wd={cwd or os.getcwd()}", "--"]

    def run(self, host: str, cmd: Sequence[str], cwd: Optional[str] = None, env=None,
            timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._enter(host, cwd) + list(cmd), env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"on {host}: {' '.join(cmd)} exited {proc.returncode}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    def popen(self, host: str, cmd: Sequence[str], cwd: Optional[str] = None, env=None,
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self._enter(host, cwd) + list(cmd), env=env or self.env(),
                                **kwargs)

    # --- file systems --------------------------------------------------------------------------

    def private_dir(self, host: str, path: str) -> None:
        """Give `host` a folder of its own at `path` (a tmpfs in its mount namespace), where
        the other hosts keep seeing the shared one: a node-local disk at a shared path.
        shared_dir() undoes it; the namespace's end (stop()) does too."""
        self.run(host, ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", path])

    def shared_dir(self, host: str, path: str) -> None:
        self.run(host, ["umount", path], check=False)

    # --- links -------------------------------------------------------------------------------

    def shape(self, host: str, rate: str, dev: str = "eth0") -> None:
        """Limit the host's egress to `rate` (tc's units: '1gbit', '10gbit') with a token bucket.
        Latency and loss would need netem (sch_netem), which this machine's kernel lacks (as it
        lacks tc's classifiers and actions: only tbf, htb and clsact load); the links' own
        latency is a veth pair's, tens of microseconds."""
        bits = rate_bits(rate)
        # A burst of at least one timer tick's worth of bytes (HZ up to 1000) keeps tbf from
        # throttling below the rate; 50 ms of queue before it drops.
        burst = max(bits // 8 // 250, 64 * 1024)
        _sh(["ip", "netns", "exec", self.ns(host), "tc", "qdisc", "replace", "dev", dev, "root",
             "tbf", "rate", rate, "burst", str(burst), "latency", "50ms"])

    def unshape(self, host: str, dev: str = "eth0") -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(host), "tc", "qdisc", "del", "dev", dev,
                        "root"], capture_output=True, timeout=30)

    def cut(self, host: str) -> None:
        """Pull the host's cable: its switch port drops everything silently (the others see
        only silence, as on a real cut) and the host's own eth0 loses its carrier."""
        i = self.names.index(host) + 1
        self._ip(self.switch, "link", "set", f"p{i}", "down")
        self._ip(self.ns(host), "link", "set", "eth0", "down")

    def heal(self, host: str) -> None:
        i = self.names.index(host) + 1
        self._ip(self.ns(host), "link", "set", "eth0", "up")
        self._ip(self.switch, "link", "set", f"p{i}", "up")

    def _ip(self, ns: str, *args: str) -> None:
        _sh(["ip", "-n", ns, *args])


def main() -> None:
    p = argparse.ArgumentParser(description="Start an emulated cluster until Ctrl-C.")
    p.add_argument("--hosts", type=int, default=2)
    a = p.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"error: {why}")
    with Cluster(a.hosts) as c:
        print(f"hosts {', '.join(c.names)}; run on one with:\n  nsenter --target "
              f"{c.sshd_pids[c.names[0]]} --net --uts --mount -- bash\n  "
              f"and ssh through {c.bin}/ssh. Ctrl-C stops and removes everything.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
