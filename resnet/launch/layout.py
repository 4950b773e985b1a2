"""How a node's cores are dealt to its ranks: sockets, cores and threads per rank, and why.

Pure arithmetic over a Topology, so it is tested for machines we are not on (Intel's
TensorFlow/Horovod CPU recipes, and measurement):
- Ranks are spread evenly over sockets and bound to whole physical cores, so a rank's threads
  never leave its socket's memory (NUMA) and never share a core with another rank.
- Threads: resnet.runtime.threads.for_rank, the one rule every launcher applies; the rank's
  environment: resnet.runtime.env.rank_env. Both are the runtime's, as Slurm's plan uses them too.
"""

import dataclasses
from typing import Dict, Tuple

from resnet.errors import UsageError
from resnet.runtime import threads
from resnet.runtime import topology as topo
from resnet.runtime.env import rank_env


@dataclasses.dataclass(frozen=True)
class RankSlot:
    local_rank: int
    sockets: Tuple[int, ...]
    cores: Tuple[int, ...]  # node-wide physical core numbers: socket * cores_per_socket + i


@dataclasses.dataclass(frozen=True)
class NodeLayout:
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


def default_ranks_per_node(t: topo.Topology) -> int:
    """One rank per socket: each rank's memory stays local, and on one socket one rank on every
    core trained as fast or faster than a rank per core on every CPU measured (BENCHMARKS.md)."""
    return t.sockets


def make(t: topo.Topology, ranks_per_node: int, nodes: int = 1, openmp: bool = False) -> NodeLayout:
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
    env = rank_env(rank, nodes, openmp_threads_per_core=t.threads_per_core if openmp else 0)
    return NodeLayout(t, nodes, ranks_per_node, cores_per_rank, sockets_per_rank, per_socket, intra,
                inter, tuple(slots), env, tuple(notes))


def mpi_map_by(layout: NodeLayout) -> str:
    if layout.ranks_per_socket:
        return f"ppr:{layout.ranks_per_socket}:socket:pe={layout.cores_per_rank}"
    return f"ppr:{layout.ranks_per_node}:node:pe={layout.cores_per_rank}"


def describe(layout: NodeLayout) -> str:
    t = layout.topology
    lines = [f"topology: {t.sockets} socket(s) x {t.cores_per_socket} cores x "
             f"{t.threads_per_core} thread(s), {t.numa_nodes} NUMA node(s)",
             f"plan: {layout.nodes} node(s) x {layout.ranks_per_node} rank(s) = {layout.total_ranks}; "
             f"{layout.cores_per_rank} core(s)/rank; intra-op {layout.intra_op_threads}, inter-op "
             f"{layout.inter_op_threads}",
             "local_rank  sockets  cores"]
    for s in layout.slots:
        cores = (f"{s.cores[0]}-{s.cores[-1]}" if len(s.cores) > 1 else str(s.cores[0]))
        lines.append(f"{s.local_rank:>10}  {','.join(map(str, s.sockets)):>7}  {cores}")
    lines += [f"note: {n}" for n in layout.notes]
    return "\n".join(lines)
