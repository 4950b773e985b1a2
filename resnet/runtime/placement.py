"""Where each rank really runs: gathered on rank 0 and printed as the start-up table."""

import os

from resnet.runtime.world import World

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


def cpu_ranges(cpus) -> str:
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
                     f"{r['inter']:>5}  {cpu_ranges(r['cpus'])}")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            shared = sorted(set(a["cpus"]) & set(b["cpus"])) if a["host"] == b["host"] else []
            if shared:
                lines.append(f"WARNING: ranks {a['rank']} and {b['rank']} on {a['host']} share "
                             f"CPU(s) {cpu_ranges(shared)}: they slow each other down; bind "
                             "ranks to cores (launch/horovodrun.sh, launch/mpirun.sh)")
    return "\n".join(lines)


