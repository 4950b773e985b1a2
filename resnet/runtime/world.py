"""The process's place in the job: Horovod start-up, the one is_chief, and how rank 0's
decisions reach the others.

Every rank-0-only decision in the package keys off World.is_chief, computed here once, and
start() quiets the other ranks' info lines once, so that log calls need no rank checks: a
warning or an error still comes from every rank (a rank's own failure must be seen).
"""

import dataclasses
import json
import os
import socket
from typing import Callable, TypeVar

import numpy as np
import tensorflow as tf
from absl import logging

from resnet.errors import UsageError
from resnet.runtime.threads import thread_counts

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


def start(intra_op_threads: int = 0, inter_op_threads: int = 0) -> World:
    """Apply threads (before any TF op runs: TF fixes its pools at the first op), then start
    Horovod. Without a launcher this is a world of one, the single-process debug mode."""
    intra, inter = thread_counts(intra_op_threads, inter_op_threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TF already ran ops in this process (a test calling run twice)
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        logging.warning("TensorFlow's thread pools were already made: %d intra-op and %d "
                        "inter-op threads (0: TensorFlow's choice) stay", intra, inter)
    check_cpu_operations(os.environ)
    import horovod.tensorflow.keras as hvd
    hvd.init()
    world = World(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                  local_size=hvd.local_size(), host=socket.gethostname(),
                  intra_op_threads=intra, inter_op_threads=inter)
    quiet_unless_chief(world)
    return world


def check_cpu_operations(environ) -> None:
    """HOROVOD_CPU_OPERATIONS=gloo asks for Gloo's allreduce, which only a Gloo controller sets
    up (horovodrun --gloo, or elastic mode). Under mpirun, or with no launcher, Horovod 0.28.1
    starts without a Gloo context and dies with SIGSEGV at the first allreduce (seen in
    benchmarks/allreduce.py's levers): refuse it here, with what to do instead."""
    ops = environ.get("HOROVOD_CPU_OPERATIONS", "").strip().lower()
    if ops == "gloo" and not environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        raise UsageError("HOROVOD_CPU_OPERATIONS=gloo needs Horovod's Gloo controller, which "
                         "this process was not started under: launch with horovodrun --gloo "
                         "(or --elastic), or unset HOROVOD_CPU_OPERATIONS to allreduce with "
                         "MPI. (Under mpirun Horovod would crash at the first allreduce.)")


def quiet_unless_chief(world: World) -> None:
    """Rank 0 alone logs progress; the other ranks keep their warnings and errors."""
    logging.set_verbosity(logging.INFO if world.is_chief else logging.WARNING)


def current(world: World) -> World:
    """`world` with the rank and size Horovod has now: elastic mode re-forms the job after a
    rank dies or joins, and every rank-dependent choice must be made afresh from this."""
    import horovod.tensorflow as hvd
    return dataclasses.replace(world, rank=hvd.rank(), size=hvd.size(),
                               local_rank=hvd.local_rank(), local_size=hvd.local_size())


def chief_decides(world: World, decide: Callable[[], T]) -> T:
    """Run `decide` on rank 0 alone and hand its result (anything JSON holds; tuples arrive as
    lists), or its UsageError, to every rank.

    The one way rank-0 decisions reach the other ranks: a refusal on rank 0 stops all ranks with
    the same message instead of leaving them waiting in the next collective.
    """
    result, error = None, None
    if world.is_chief:
        try:
            result = decide()
        except UsageError as e:
            error = str(e)
    if world.size > 1:
        result, error = broadcast_json((result, error), world.is_chief)
    if error is not None:
        raise UsageError(error)
    return result


def broadcast_json(value, is_root: bool):
    """The root rank's (rank 0's) `value` on every rank, through JSON bytes: Horovod's own
    broadcast_object unpickles what it receives, and this project unpickles nothing that can
    run code."""
    import horovod.tensorflow as hvd
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    size = int(hvd.broadcast(tf.constant([len(data)], tf.int64), 0, name="json_len")[0])
    buf = np.zeros(size, np.uint8)
    if is_root:
        buf[:] = data
    return json.loads(hvd.broadcast(tf.constant(buf), 0, name="json_bytes").numpy().tobytes()
                      .decode())


def allgather_json(world: World, value) -> list:
    """Every rank's `value` (anything JSON holds), in rank order, on every rank. Through JSON
    bytes rather than Horovod's allgather_object, which unpickles what other ranks send."""
    if world.size == 1:
        return [value]
    import horovod.tensorflow as hvd
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = hvd.allgather(tf.constant([len(data)], tf.int64), name="json_sizes").numpy()
    blob = hvd.allgather(tf.constant(data), name="json_bytes").numpy()
    ends = np.cumsum(sizes)
    return [json.loads(blob[end - size:end].tobytes().decode()) for size, end in zip(sizes, ends)]


def barrier(world: World) -> None:
    """Wait until every rank gets here."""
    if world.size > 1:
        import horovod.tensorflow as hvd
        hvd.allreduce(tf.constant(0.0), op=hvd.Sum, name="barrier")


SHUT_DOWN_HELP = (
    "Horovod shut the job down: a rank stopped submitting tensors for longer than "
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS (Horovod's 'Missing ranks' warning above names it), or "
    "a rank failed (its error is above). The checkpoints already written are intact: run the "
    "same command to resume")


def horovod_shut_down(error: BaseException) -> bool:
    """True when `error` is Horovod refusing a collective because its background loop has ended:
    a rank stopped submitting tensors for HOROVOD_STALL_SHUTDOWN_TIME_SECONDS (the launch plans
    set it), or a rank failed. Every collective after that fails the same way, on every rank."""
    return isinstance(error, tf.errors.OpError) and "Horovod has been shut down" in str(error)
