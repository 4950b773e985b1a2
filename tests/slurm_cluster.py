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

    def _write_conf(self):
        cpus = os.cpu_count()
        lscpu = subprocess.run(["lscpu", "-p=CORE,SOCKET"], capture_output=True, text=True,
                               timeout=30).stdout
        rows = [l for l in lscpu.splitlines() if l and not l.startswith("#")]
        sockets = len({r.split(",")[1] for r in rows}) or 1
        cores = len({r for r in rows}) // sockets or cpus
        threads = max(1, cpus // (sockets * cores))
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=resnettest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={self.dir}/state
SlurmdSpoolDir={self.dir}/spool
SlurmctldPidFile={self.dir}/slurmctld.pid
SlurmdPidFile={self.dir}/slurmd.pid
SlurmctldLogFile={self.dir}/slurmctld.log
SlurmdLogFile={self.dir}/slurmd.log
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
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} Sockets={sockets} CoresPerSocket={cores} ThreadsPerCore={threads} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")

    def start(self):
        self.started_munge = _start_munge()
        self._write_conf()
        subprocess.run(["slurmctld", "-f", self.conf], check=True, env=self.env, timeout=60)
        subprocess.run(["slurmd", "-f", self.conf], check=True, env=self.env, timeout=60)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"slurm node not idle after 60 s (state {state!r}); see "
                           f"{self.dir}/slurmctld.log and slurmd.log")

    def stop(self):
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, timeout=60)
        pid_files = [os.path.join(self.dir, f) for f in ("slurmd.pid", "slurmctld.pid")]
        if self.started_munge:  # a munged that was already running is left alone
            pid_files.append(MUNGE_PID)
        for path in pid_files:
            try:
                os.kill(int(open(path).read()), 15)
            except (OSError, ValueError):
                pass

    def sbatch(self, args, cwd):
        out = subprocess.run(["sbatch", "--parsable"] + list(args), cwd=cwd, env=self.env,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        return out.strip().split(";")[0]

    def job(self, job_id) -> dict:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=self.env,
                             capture_output=True, text=True, timeout=60).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

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
