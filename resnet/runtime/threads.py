"""A rank's TensorFlow thread pools: one rule, whoever launched the rank.

intra-op threads = the rank's physical cores: oneDNN's convolutions are compute-bound and a
hyper-thread sibling adds nothing to them. inter-op threads = 2 for a rank of 2+ cores (1 per
socket it spans if that is more), 1 for a one-core rank: two ops in flight overlap the backward
pass's independent gradient ops. Measured at 1 rank x 2 cores: 111 images/s with 2 against 94 with
1 (+17%, interleaved runs, BENCHMARKS.md); larger counts could not be measured on 2 cores.
"""

import os


def inter_op_threads(cores: int, sockets: int = 1) -> int:
    """TensorFlow inter-op threads for a rank with `cores` physical cores over `sockets`."""
    return max(2, sockets) if cores >= 2 else 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def thread_counts(intra: int = 0, inter: int = 0):
    """(intra, inter) op threads: the flag if set, else what the launch plan exported, else
    one intra-op thread per CPU this process may run on and the launch plan's inter-op rule
    (2 from 2 CPUs up: +17% measured at 2 cores against 1)."""
    cpus = len(os.sched_getaffinity(0))
    intra = intra or _env_int("OMP_NUM_THREADS") or cpus
    inter = inter or _env_int("TF_NUM_INTEROP_THREADS") or inter_op_threads(min(intra, cpus))
    return intra, inter


