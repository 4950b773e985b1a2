"""A rank's environment: the variables every rank runs with, whoever starts it.

One rule for all of them: the rank's thread counts are the launch plan's (they are computed for
the cores the rank is bound to, and an inherited OMP_NUM_THREADS is a shell's, not this rank's);
every other variable here is a default, and a value the user already set wins, in a launch plan
(launch_env) and in a process started by hand (set_defaults: `python train_dist.py`, plain
`horovodrun -np 4 python train_dist.py`, mpirun typed by hand). No TensorFlow here: the launch
scripts use this module on login nodes, and set_defaults must run before TensorFlow loads.
"""

import os
from typing import Dict, Mapping, MutableMapping

from resnet.runtime.threads import RankThreads

# oneDNN's fused CPU kernels. TensorFlow 2.21 turns them on by itself only on CPUs with
# AVX512-VNNI, AVX512-BF16 or AMX (ONEDNN_DEFAULT_FLAGS); on AVX2 they stay off unless asked
# for, and ResNet50 trains several times slower without them (docs/experiments.md, "Closing
# the gap to plain Keras with oneDNN").
ONEDNN_ENV = {"TF_ENABLE_ONEDNN_OPTS": "1"}
# CPU flags (as /proc/cpuinfo spells them) on which TensorFlow turns oneDNN on by itself. Seen:
# on an EPYC with avx512_vnni and avx512_bf16 IsMklEnabled() is True with the variable unset; on
# an AVX2-only one it is False (TF 2.15 and 2.21 alike).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
# A rank that hangs (stuck I/O, a stopped process) stalls every allreduce. Horovod names the
# missing ranks after a minute and, with a shutdown time, ends the job instead of hanging forever.
STALL_ENV = {"HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
             "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "600"}
# While a rank waits in a collective, Open MPI spins on the CPU; Horovod's background thread
# meets the other ranks every cycle (1 ms), so that spin shares the rank's cores with its own
# training threads. Yielding in the spin measured faster at 2 ranks x 1 core and across hosts
# (BENCHMARKS.md, "End to end: train_dist.py across 2 hosts"). Intel MPI and Gloo ignore it.
COMM_ENV = {"OMPI_MCA_mpi_yield_when_idle": "1"}
# Across hosts, Open MPI's own choice of allreduce algorithm (coll_tuned's fixed rules, by rank
# count and message size) measured much slower than its ring at 3 hosts for ResNet50's fused
# gradients, equal at 2 (BENCHMARKS.md, "The allreduce alone"). So a multi-host plan asks for
# the ring (algorithm 4; below one element per rank it falls back to recursive doubling).
RING_ENV = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
            "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"}
# Computed per rank by the launch plan: these override what the launching shell had.
PLAN_OWNED = frozenset(RankThreads(1, 1, False).env())


def onednn_by_default(cpu_flags) -> bool:
    """Whether TensorFlow turns oneDNN on by itself on a CPU with these flags."""
    return any(f in ONEDNN_DEFAULT_FLAGS for f in cpu_flags)


def rank_env(rank: RankThreads, nodes: int, openmp_threads_per_core: int = 0) -> Dict[str, str]:
    """Every rank's environment, whichever launcher starts it (a launch plan or Slurm's).
    `openmp_threads_per_core`: where TensorFlow ships Intel's OpenMP (openmp_runtime_present),
    the node's hardware threads per core, for its KMP_* variables; 0 leaves them out (stock
    tensorflow-cpu uses Eigen's threads, which ignore them)."""
    env = {**rank.env(), **ONEDNN_ENV, **STALL_ENV, **COMM_ENV,
           **(RING_ENV if nodes > 1 else {})}
    if openmp_threads_per_core:
        env["KMP_AFFINITY"] = ("granularity=fine,compact,1,0" if openmp_threads_per_core > 1
                               else "granularity=fine,compact")
        env["KMP_BLOCKTIME"] = "1"  # idle OpenMP threads yield soon: Horovod's thread needs the core
    return env


def openmp_runtime_present() -> bool:
    """Whether this TensorFlow ships Intel's OpenMP (libiomp5), which reads KMP_* variables."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return False
    if not spec or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        for _, _, files in os.walk(root):
            if any(f.startswith("libiomp5") for f in files):
                return True
    return False


def launch_env(plan_env: Mapping[str, str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The launcher's environment: `environ` with the plan's variables, where every default the
    user has already set stays the user's (to compare settings, turn oneDNN off, or for another
    MPI), and the plan's thread counts replace the shell's."""
    return dict(environ, **{k: v for k, v in plan_env.items()
                            if k in PLAN_OWNED or k not in environ})


def set_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """The defaults for a process started without a launch plan, where none is set already.
    Before TensorFlow loads (it reads TF_ENABLE_ONEDNN_OPTS once) and before Horovod starts MPI
    (Open MPI reads its MCA variables at MPI_Init): resnet/__init__.py calls it."""
    for key, value in {**ONEDNN_ENV, **COMM_ENV}.items():
        environ.setdefault(key, value)
