"""A rank's TensorFlow thread pools: one rule, whichever launcher started the rank.

for_rank() is that rule. The launch plans (horovodrun, mpirun) and the Slurm plan apply it to
the cores they give each rank and export the result (OMP_NUM_THREADS, TF_NUM_INTEROP_THREADS);
a process started without a launcher applies it to the cores it may run on. So the same node and
the same ranks get the same threads whoever started them (tests/test_runtime.py holds the three
side by side on stated topologies).

- intra-op threads = the rank's physical cores: oneDNN's convolutions are compute-bound and a
  hyper-thread sibling adds nothing to them. From SPARE_CORE_FROM cores without hyper-threading,
  one core is left to Horovod's background thread and tf.data (a stalled allreduce costs more
  than 1/8 of the compute); with hyper-threading the spare siblings host them for free.
- inter-op threads = 2 for a rank of 2+ cores (1 per socket it spans if that is more), 1 for a
  one-core rank: two ops in flight overlap the backward pass's independent gradient ops.
  Measured faster than 1 at 1 rank x 2 cores (docs/experiments.md, interleaved runs); larger
  counts could not be measured on a 2-core machine.
"""

import dataclasses
import os
from typing import Dict

from resnet.runtime import topology as topo

SPARE_CORE_FROM = 8  # physical cores per rank from which one is left to Horovod and tf.data


@dataclasses.dataclass(frozen=True)
class RankThreads:
    intra: int
    inter: int
    spare_core: bool  # one core left to Horovod's thread and tf.data

    def env(self) -> Dict[str, str]:
        """What a launcher exports for the rank (OpenMP builds of TensorFlow size their pool
        from OMP_NUM_THREADS; train_dist.py reads both as its defaults)."""
        return {"OMP_NUM_THREADS": str(self.intra), "TF_NUM_INTEROP_THREADS": str(self.inter)}


def inter_op_threads(cores: int, sockets: int = 1) -> int:
    """TensorFlow inter-op threads for a rank with `cores` physical cores over `sockets`."""
    return max(2, sockets) if cores >= 2 else 1


def for_rank(cores: int, sockets: int = 1, threads_per_core: int = 1) -> RankThreads:
    """The threads of a rank that owns `cores` physical cores on `sockets` sockets of a node
    with `threads_per_core` hardware threads per core."""
    spare = cores >= SPARE_CORE_FROM and threads_per_core == 1
    return RankThreads(cores - spare, inter_op_threads(cores, sockets), spare)


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def thread_counts(intra: int = 0, inter: int = 0, topology=None):
    """(intra, inter) op threads: the flags if set, else what the launcher exported, else
    for_rank() over the cores this process may run on (`topology`, default: read from this
    process's CPU affinity, hyper-thread siblings counted once)."""
    exported = _env_int("OMP_NUM_THREADS")
    intra = intra or exported
    inter = inter or _env_int("TF_NUM_INTEROP_THREADS") or (inter_op_threads(intra) if intra
                                                              else 0)
    if not (intra and inter):  # no launcher: read the topology (lscpu) only now
        topology = topology or topo.read()
        own = for_rank(topology.physical_cores, topology.sockets, topology.threads_per_core)
        intra, inter = intra or own.intra, inter or own.inter
    return intra, inter
