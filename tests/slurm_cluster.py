"""A real one-node Slurm cluster on this machine, for the tests: munge, slurmctld and slurmd.

Debian's slurm-wlm and munge are installed when missing (as root, through apt-get); the config is
generated for this machine's CPUs and memory in a temporary folder, the daemons are started on
their own ports and stopped afterwards. Client commands need SLURM_CONF from `env`.
"""

import os
import shutil
import socket
import subprocess
import time

PACKAGES = ("slurm-wlm", "munge")


def ensure_installed():
    """None when the daemons are there (installing them if needed), else the reason they are not."""
    if all(shutil.which(c) for c in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm-wlm and munge are not installed and cannot be installed here (not root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            return f"cannot install {' '.join(PACKAGES)}: {proc.stderr.strip()[-500:]}"
    return None


def _munge_running() -> bool:
    enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=30)
    return enc.returncode == 0 and subprocess.run(["unmunge"], input=enc.stdout, capture_output=True,
                                                  timeout=30).returncode == 0


MUNGE_PID = "/run/munge/munged.pid"


def _start_munge() -> bool:
    """True when this call started munged (and so the cluster must stop it)."""
    if _munge_running():
        return False
    if not os.path.exists("/etc/munge/munge.key"):
        subprocess.run(["mungekey", "--create"], check=True, timeout=60)
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    os.makedirs("/run/munge", exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, timeout=60)
    for _ in range(50):
        if _munge_running():
            return True
        time.sleep(0.1)
    raise RuntimeError("munged did not start")


class Cluster:
    def __init__(self, workdir: str):
        self.dir = workdir
        self.conf = os.path.join(workdir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.host = socket.gethostname().split(".")[0]
        self.started_munge = False
        self._per_node = ""  # the multi-node cluster's daemons' files: one per node (%n)

    def _client(self, cmd, cwd=None, timeout=60) -> subprocess.CompletedProcess:
        """A Slurm client command (sinfo, sbatch, scontrol) where it reaches slurmctld."""
        return subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def _daemons(self) -> None:
        subprocess.run(["slurmctld", "-f", self.conf], check=True, env=self.env, timeout=60)
        subprocess.run(["slurmd", "-f", self.conf], check=True, env=self.env, timeout=60)

    def _pid_files(self):
        return [os.path.join(self.dir, f) for f in ("slurmd.pid", "slurmctld.pid")]

    def _nodes_conf(self, cpus, sockets, cores, threads, mem_mb) -> str:
        return (f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} Sockets={sockets} "
                f"CoresPerSocket={cores} ThreadsPerCore={threads} RealMemory={mem_mb} "
                f"State=UNKNOWN\nPartitionName=debug Nodes={self.host} Default=YES "
                "MaxTime=INFINITE State=UP OverSubscribe=NO\n")

    def _controller(self) -> str:
        return f"{self.host}(127.0.0.1)"

    def _write_conf(self):
        cpus = os.cpu_count()
        lscpu = subprocess.run(["lscpu", "-p=CORE,SOCKET"], capture_output=True, text=True,
                               timeout=30).stdout
        rows = [l for l in lscpu.splitlines() if l and not l.startswith("#")]
        sockets = len({r.split(",")[1] for r in rows}) or 1
        cores = len({r for r in rows}) // sockets or cpus
        threads = max(1, cpus // (sockets * cores))
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        for sub in ("state", "spool", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        # cred_expire: a requeued job waits this long before it may start again (slurm.conf(5);
        # the default 120 s is most of a pre-emption test's wall time). 20 s still covers a
        # step's launch on this loaded machine, which the credential must outlive.
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=resnettest
SlurmctldHost={self._controller()}
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=20
StateSaveLocation={self.dir}/state
SlurmdSpoolDir={self.dir}/spool{self._per_node}
SlurmctldPidFile={self.dir}/slurmctld.pid
SlurmdPidFile={self.dir}/slurmd{self._per_node}.pid
SlurmctldLogFile={self.dir}/slurmctld.log
SlurmdLogFile={self.dir}/slurmd{self._per_node}.log
TmpFS={self.dir}/tmp{self._per_node}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=30
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
""" + self._nodes_conf(cpus, sockets, cores, threads, mem_mb))

    def start(self):
        self.started_munge = _start_munge()
        self._write_conf()
        self._daemons()
        deadline = time.time() + 60
        while time.time() < deadline:
            states = self._client(["sinfo", "-h", "-N", "-o", "%T"], timeout=30).stdout.split()
            if states and all(s == "idle" for s in states):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"slurm nodes not idle after 60 s (states {states!r}); see "
                           f"{self.dir}/slurmctld.log and slurmd*.log")

    def stop(self):
        self._client(["scontrol", "shutdown"])
        pid_files = self._pid_files()
        if self.started_munge:  # a munged that was already running is left alone
            pid_files.append(MUNGE_PID)
        for path in pid_files:
            try:
                os.kill(int(open(path).read()), 15)
            except (OSError, ValueError):
                pass

    def sbatch(self, args, cwd):
        out = self._client(["sbatch", "--parsable"] + list(args), cwd=cwd)
        if out.returncode:
            raise RuntimeError(f"sbatch {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def job(self, job_id) -> dict:
        out = self._client(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def preempt_when(self, job_id, out, text: str, timeout: float = 600) -> None:
        """Once the job's output file `out` shows `text`, send its batch shell USR1, as Slurm
        does 120 s before the time limit (#SBATCH --signal=B:USR1@120)."""
        deadline = time.time() + timeout
        while text not in (out.read_text() if out.exists() else ""):
            assert time.time() < deadline, "training never started"
            assert self.job(job_id).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING")
            time.sleep(1)
        got = self._client(["scancel", "--signal=USR1", "--batch", job_id])
        assert got.returncode == 0, got.stderr

    def wait(self, job_id, timeout=900, until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                "NODE_FAIL", "OUT_OF_MEMORY")):
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(2)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after "
                           f"{timeout} s")


class MultiNode(Cluster):
    """slurmctld on the first host of a netcluster.Cluster and a slurmd on each, inside the
    hosts' namespaces under their own NodeNames: jobs span hosts as on a real cluster. Client
    commands run on the first host (where slurmctld's address is)."""

    def __init__(self, workdir: str, net):
        super().__init__(workdir)
        self.net = net
        self.host = net.names[0]
        self._per_node = "-%n"

    def _controller(self) -> str:
        return f"{self.host}({self.net.address(self.host)})"

    def _nodes_conf(self, cpus, sockets, cores, threads, mem_mb) -> str:
        # Every host is this machine: each claims all its CPUs, as a node claims its own.
        nodes = "".join(f"NodeName={h} NodeAddr={self.net.address(h)} CPUs={cpus} "
                        f"Sockets={sockets} CoresPerSocket={cores} ThreadsPerCore={threads} "
                        f"RealMemory={mem_mb // len(self.net.names)} State=UNKNOWN\n"
                        for h in self.net.names)
        return nodes + (f"PartitionName=debug Nodes={','.join(self.net.names)} Default=YES "
                        "MaxTime=INFINITE State=UP OverSubscribe=NO\n")

    def _client(self, cmd, cwd=None, timeout=60) -> subprocess.CompletedProcess:
        return self.net.run(self.host, cmd, cwd=cwd, env=self.env, timeout=timeout, check=False)

    def _daemons(self) -> None:
        self.net.run(self.host, ["slurmctld", "-f", self.conf], env=self.env, timeout=60)
        for h in self.net.names:
            # One /tmp per node for what slurmstepd keeps there (PMIx's client directories are
            # named by job and step only: two nodes on one file system would collide).
            for sub in ("spool", "tmp"):
                os.makedirs(os.path.join(self.dir, f"{sub}-{h}"), exist_ok=True)
            self.net.run(h, ["slurmd", "-f", self.conf, "-N", h], env=self.env, timeout=60)

    def _pid_files(self):
        return ([os.path.join(self.dir, f"slurmd-{h}.pid") for h in self.net.names] +
                [os.path.join(self.dir, "slurmctld.pid")])
