"""The node's CPU topology: sockets, physical cores per socket, hardware threads, NUMA nodes.

Read from `lscpu -p` (util-linux, on every Linux node), falling back to /sys. Only the CPUs this
process may run on are counted (a Slurm step or a container sees a subset), so a plan never hands
out cores the job cannot use.
"""

import collections
import dataclasses
import glob
import os
import subprocess
from typing import Dict, FrozenSet, List, Optional, Tuple

from resnet.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Topology:
    sockets: int
    cores_per_socket: int  # physical cores
    threads_per_core: int  # 2 with hyper-threading on
    numa_nodes: int = 1

    def __post_init__(self):
        for name in ("sockets", "cores_per_socket", "threads_per_core", "numa_nodes"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name}={getattr(self, name)}: a node has at least one")

    @property
    def physical_cores(self) -> int:
        return self.sockets * self.cores_per_socket


def _from_rows(rows: List[Tuple[int, int, int, int]]) -> Topology:
    """rows: (cpu, core, socket, node) for each logical CPU we may use."""
    allowed = os.sched_getaffinity(0)
    rows = [r for r in rows if r[0] in allowed] or rows
    cores_by_socket: Dict[int, set] = collections.defaultdict(set)
    threads: Dict[Tuple[int, int], int] = collections.Counter()
    for cpu, core, socket, _ in rows:
        cores_by_socket[socket].add(core)
        threads[(socket, core)] += 1
    return Topology(sockets=len(cores_by_socket),
                    cores_per_socket=min(len(c) for c in cores_by_socket.values()),
                    threads_per_core=max(threads.values()),
                    numa_nodes=len({r[3] for r in rows}))


def _lscpu_rows() -> List[Tuple[int, int, int, int]]:
    out = subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET,NODE"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    rows = []
    for line in out.splitlines():
        if line and not line.startswith("#"):
            rows.append(tuple(int(x) if x else 0 for x in line.split(",")))
    return rows


def _sys_rows() -> List[Tuple[int, int, int, int]]:
    rows = []
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology"):
        cpu = int(path.split("/")[-2][3:])

        def read(name):
            with open(os.path.join(path, name)) as f:
                return int(f.read())
        nodes = glob.glob(os.path.join(os.path.dirname(path), "node[0-9]*"))
        rows.append((cpu, read("core_id"), read("physical_package_id"),
                     int(nodes[0].rsplit("node", 1)[1]) if nodes else 0))
    return rows


def read() -> Topology:
    try:
        return _from_rows(_lscpu_rows())
    except (OSError, subprocess.SubprocessError, ValueError):
        return _from_rows(_sys_rows())


# CPU flags (as /proc/cpuinfo spells them) of bfloat16 arithmetic that oneDNN uses: AMX on Intel
# Sapphire Rapids and later, AVX512-BF16 on Cooper Lake and AMD Zen 4.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def has_bf16(flags: Optional[FrozenSet[str]]) -> bool:
    """True when these CPU flags include bfloat16 arithmetic (None, flags unknown: False)."""
    return flags is not None and any(f in flags for f in BF16_CPU_FLAGS)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[FrozenSet[str]]:
    """The CPU's feature flags as the kernel spells them (avx512_bf16, amx_bf16, ...); None when
    they cannot be read (not Linux, or no flags line)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None
