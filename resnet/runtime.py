"""The process's place in the job: Horovod start-up, threads, and the one is_chief.

Every rank-0-only decision in the package keys off World.is_chief, computed here once.
"""

import dataclasses
import os
import socket
from typing import Callable, TypeVar

import tensorflow as tf

from resnet.errors import UsageError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    host: str
    intra_op_threads: int
    inter_op_threads: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def thread_counts(intra: int = 0, inter: int = 0):
    """(intra, inter) op threads: the flag if set, else what the launch plan exported, else
    one intra-op thread per CPU this process may run on and one inter-op thread (ResNet50's graph
    is a chain: a second concurrent op only steals cores from the convolution)."""
    intra = intra or _env_int("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))
    inter = inter or _env_int("TF_NUM_INTEROP_THREADS") or 1
    return intra, inter


def start(intra_op_threads: int = 0, inter_op_threads: int = 0) -> World:
    """Apply threads (before any TF op runs: TF fixes its pools at the first op), then start
    Horovod. Without a launcher this is a world of one, the single-process debug mode."""
    intra, inter = thread_counts(intra_op_threads, inter_op_threads)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    import horovod.tensorflow.keras as hvd
    hvd.init()
    return World(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                 local_size=hvd.local_size(), host=socket.gethostname(),
                 intra_op_threads=intra, inter_op_threads=inter)


def chief_decides(world: World, decide: Callable[[], T]) -> T:
    """Run `decide` on rank 0 alone and hand its result, or its UsageError, to every rank.

    The one way rank-0 decisions reach the other ranks: a refusal on rank 0 stops all ranks with
    the same message instead of leaving them waiting in the next collective.
    """
    import horovod.tensorflow as hvd
    result, error = None, None
    if world.is_chief:
        try:
            result = decide()
        except UsageError as e:
            error = str(e)
    if world.size > 1:
        # Horovod: rank 0's answer (pickled by Horovod, from rank 0 only) to every rank.
        result, error = hvd.broadcast_object((result, error), root_rank=0)
    if error is not None:
        raise UsageError(error)
    return result
