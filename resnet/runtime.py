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
    one intra-op thread per CPU this process may run on and the launch plan's inter-op rule
    (2 from 2 CPUs up: +17% measured at 2 cores against 1)."""
    from resnet.launch_plan import inter_op_threads
    cpus = len(os.sched_getaffinity(0))
    intra = intra or _env_int("OMP_NUM_THREADS") or cpus
    inter = inter or _env_int("TF_NUM_INTEROP_THREADS") or inter_op_threads(min(intra, cpus))
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


def current(world: World) -> World:
    """`world` with the rank and size Horovod has now: elastic mode re-forms the job after a
    rank dies or joins, and every rank-dependent choice must be made afresh from this."""
    import horovod.tensorflow as hvd
    return dataclasses.replace(world, rank=hvd.rank(), size=hvd.size(),
                               local_rank=hvd.local_rank(), local_size=hvd.local_size())


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


def barrier(world: World) -> None:
    """Wait until every rank gets here."""
    if world.size > 1:
        import horovod.tensorflow as hvd
        hvd.allreduce(tf.constant(0.0), op=hvd.Sum, name="barrier")


# --- Placement: where each rank really runs ---------------------------------------------------

_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE")


def _my_placement(world: World) -> dict:
    return {"rank": world.rank, "host": world.host, "local_rank": world.local_rank,
            "cpus": sorted(os.sched_getaffinity(0)),  # what the launcher's binding gave us
            "intra": world.intra_op_threads, "inter": world.inter_op_threads}


def gather_placement(world: World) -> list:
    """Every rank's placement, on rank 0 (others get []). Through mpi4py when an MPI launcher
    started us, through Horovod otherwise (horovodrun --gloo, or no launcher)."""
    me = _my_placement(world)
    if world.size == 1:
        return [me]
    if any(k in os.environ for k in _MPI_ENV):
        try:
            from mpi4py import MPI  # MPI is already initialised by Horovod; this joins it
            rows = MPI.COMM_WORLD.gather(me, root=0)
            return sorted(rows, key=lambda r: r["rank"]) if world.is_chief else []
        except ImportError:
            pass
    import horovod.tensorflow as hvd
    rows = hvd.allgather_object(me)
    return sorted(rows, key=lambda r: r["rank"]) if world.is_chief else []


def _cpu_ranges(cpus) -> str:
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


def format_placement(rows: list) -> str:
    """The start-up table, with a warning line for every pair of ranks sharing a CPU."""
    lines = [f"{'rank':>4}  {'host':<16} {'local':>5}  {'intra':>5} {'inter':>5}  cpus"]
    for r in rows:
        lines.append(f"{r['rank']:>4}  {r['host']:<16} {r['local_rank']:>5}  {r['intra']:>5} "
                     f"{r['inter']:>5}  {_cpu_ranges(r['cpus'])}")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            shared = sorted(set(a["cpus"]) & set(b["cpus"])) if a["host"] == b["host"] else []
            if shared:
                lines.append(f"WARNING: ranks {a['rank']} and {b['rank']} on {a['host']} share "
                             f"CPU(s) {_cpu_ranges(shared)}: they slow each other down; bind "
                             "ranks to cores (launch/horovodrun.sh, launch/mpirun.sh)")
    return "\n".join(lines)


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
