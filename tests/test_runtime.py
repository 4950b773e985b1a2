"""The runtime in-process: CPU ranges, the placement table, thread counts, rank-0 decisions and
rank-0 logging, on a world of one (the multi-rank paths run under horovodrun elsewhere)."""


import os
import subprocess
import sys

import pytest
from absl import logging

from resnet.errors import UsageError
from resnet.launch import layout as layout_lib
from resnet.launch import slurm
from resnet.runtime import env as env_lib, placement, threads, topology, world as world_lib

from conftest import job_env


def _world(rank=0, size=1):
    return world_lib.World(rank=rank, size=size, local_rank=rank, local_size=size, host="h",
                           intra_op_threads=1, inter_op_threads=1)


def test_cpu_ranges():
    assert placement.cpu_ranges([0]) == "0"
    assert placement.cpu_ranges([0, 1, 2, 3]) == "0-3"
    assert placement.cpu_ranges([0, 1, 4, 6, 7, 8]) == "0-1,4,6-8"
    assert placement.cpu_ranges([]) == ""


def _row(rank, host, cpus, local=0):
    return {"rank": rank, "host": host, "local_rank": local, "cpus": cpus, "intra": len(cpus),
            "inter": 2 if len(cpus) > 1 else 1}


def test_placement_table_warns_only_about_ranks_sharing_cpus_on_one_host():
    table = placement.format_placement([_row(0, "node1", [0, 1]), _row(1, "node1", [2, 3], 1),
                                        _row(2, "node2", [0, 1])])
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "host", "local", "intra", "inter", "cpus"]
    assert lines[1].split() == ["0", "node1", "0", "2", "2", "0-1"]
    assert lines[3].split() == ["2", "node2", "0", "2", "2", "0-1"]
    assert "WARNING" not in table  # the same CPU numbers on two hosts are not shared
    shared = placement.format_placement([_row(0, "n", [0, 1, 2]), _row(1, "n", [2, 3], 1)])
    assert "WARNING: ranks 0 and 1 on n share CPU(s) 2:" in shared


def test_thread_counts_flag_then_launcher_then_own_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    ht_socket = topology.Topology(1, 28, 2)  # bound to one socket of 28 cores, 56 threads
    assert threads.thread_counts(topology=ht_socket) == (28, 2)  # siblings counted once
    assert threads.thread_counts(topology=topology.Topology(1, 1, 1)) == (1, 1)
    # No launcher and no flags: this process's own cores, counted from the kernel's /sys
    # (each (package, core) once) rather than through topology.read().
    allowed = os.sched_getaffinity(0)
    cores = {(open(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id").read(),
              open(f"/sys/devices/system/cpu/cpu{c}/topology/core_id").read()) for c in allowed}
    spare = len(cores) >= threads.SPARE_CORE_FROM and len(cores) == len(allowed)
    assert threads.thread_counts() == (len(cores) - spare, 2 if len(cores) >= 2 else 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.thread_counts(topology=ht_socket) == (1, 1)  # a one-core rank: one inter-op
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "3")
    assert threads.thread_counts(topology=ht_socket) == (1, 3)
    assert threads.thread_counts(intra=4, inter=2) == (4, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # unreadable: as if unset
    assert threads.thread_counts(topology=ht_socket)[0] == 28


def test_inter_op_rule():
    assert [threads.inter_op_threads(c) for c in (1, 2, 8, 56)] == [1, 2, 2, 2]
    assert threads.inter_op_threads(28, sockets=2) == 2
    assert threads.inter_op_threads(56, sockets=4) == 4


# (topology, ranks per node): hyper-threaded two-socket nodes, where Slurm's --cpus-per-task
# counts logical CPUs, and nodes without hyper-threading, where a rank of 8+ cores keeps one spare.
NODES = [(topology.Topology(2, 28, 2), 2), (topology.Topology(2, 28, 2), 4),
         (topology.Topology(2, 28, 1), 2), (topology.Topology(2, 16, 2), 8),
         (topology.Topology(1, 2, 1), 2), (topology.Topology(1, 2, 1), 1),
         (topology.Topology(2, 4, 1), 2)]


@pytest.mark.parametrize("node, ranks", NODES)
def test_every_launcher_gives_a_rank_the_same_threads(monkeypatch, node, ranks):
    """The launch plan (horovodrun, mpirun), the Slurm plan and a process started alone on the
    rank's cores: the same node and ranks, the same threads and the same exported variables."""
    plan = layout_lib.make(node, ranks)
    by_plan = (plan.intra_op_threads, plan.inter_op_threads)
    cpus_per_task = node.physical_cores * node.threads_per_core // ranks  # logical, as Slurm
    _, slurm_env = slurm.plan({"SLURM_JOB_ID": "1", "SLURM_NNODES": "1",
                               "SLURM_NTASKS_PER_NODE": str(ranks),
                               "SLURM_CPUS_PER_TASK": str(cpus_per_task)}, "/m", [], "srun",
                              "python", "train_dist.py", threads_per_core=node.threads_per_core)
    by_slurm = (int(slurm_env["OMP_NUM_THREADS"]), int(slurm_env["TF_NUM_INTEROP_THREADS"]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    sockets = plan.sockets_per_rank
    own = topology.Topology(sockets, plan.cores_per_rank // sockets, node.threads_per_core)
    alone = threads.thread_counts(topology=own)
    # Only a rank spanning sockets differs, and only in Slurm (which knows no sockets per task).
    assert by_plan == alone == (by_slurm if sockets == 1 else by_plan), (by_plan, by_slurm, alone)
    for key in ("OMP_NUM_THREADS", "TF_NUM_INTEROP_THREADS"):
        assert plan.env[key] == slurm_env[key] or sockets > 1


def test_chief_decides_returns_or_raises_on_a_world_of_one():
    assert world_lib.chief_decides(_world(), lambda: 42) == 42

    def refuse():
        raise UsageError("no")
    with pytest.raises(UsageError, match="no"):
        world_lib.chief_decides(_world(), refuse)


def test_other_ranks_keep_warnings_only():
    before = logging.get_verbosity()
    try:
        world_lib.quiet_unless_chief(_world(rank=1, size=2))
        assert logging.get_verbosity() == logging.WARNING
        world_lib.quiet_unless_chief(_world(rank=0, size=2))
        assert logging.get_verbosity() == logging.INFO
    finally:
        logging.set_verbosity(before)


def test_gloo_operations_without_a_gloo_controller_are_refused():
    with pytest.raises(UsageError, match="horovodrun --gloo"):
        world_lib.check_cpu_operations({"HOROVOD_CPU_OPERATIONS": "gloo"})
    with pytest.raises(UsageError):
        world_lib.check_cpu_operations({"HOROVOD_CPU_OPERATIONS": " GLOO "})
    # Under horovodrun --gloo (or elastic) the rendezvous is there: fine. MPI's or unset: fine.
    world_lib.check_cpu_operations({"HOROVOD_CPU_OPERATIONS": "gloo",
                                    "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.0.0.1"})
    world_lib.check_cpu_operations({"HOROVOD_CPU_OPERATIONS": "mpi"})
    world_lib.check_cpu_operations({})


def _defaults_seen(**env):
    """The rank defaults a process sees once it imports resnet, as train_dist.py does first
    (before TensorFlow loads and before Horovod starts MPI). No TensorFlow is started."""
    code = ("import os, sys, resnet; assert 'tensorflow' not in sys.modules; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['OMPI_MCA_mpi_yield_when_idle'])")
    base = {k: v for k, v in job_env().items()
            if k not in ("TF_ENABLE_ONEDNN_OPTS", "OMPI_MCA_mpi_yield_when_idle")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.split()


def test_a_process_started_by_hand_gets_the_rank_defaults_and_the_users_settings_win():
    # Plain `python train_dist.py` or `horovodrun -np 4 python train_dist.py`: oneDNN on and
    # Open MPI yielding, as a launch plan gives its ranks...
    assert _defaults_seen() == ["1", "1"]
    # ...unless the user said otherwise.
    assert _defaults_seen(TF_ENABLE_ONEDNN_OPTS="0", OMPI_MCA_mpi_yield_when_idle="0") == ["0", "0"]


def test_a_launch_plan_keeps_the_users_settings_and_sets_its_own_threads():
    plan = layout_lib.make(topology.Topology(1, 2, 1), 2)
    assert plan.env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    mine = env_lib.launch_env(plan.env, {"TF_ENABLE_ONEDNN_OPTS": "0", "OMP_NUM_THREADS": "8",
                                         "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "60"})
    assert mine["TF_ENABLE_ONEDNN_OPTS"] == "0"  # a user's explicit setting wins
    assert mine["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "60"
    assert mine["OMP_NUM_THREADS"] == "1"  # the plan's, for the cores each rank is bound to
    assert env_lib.launch_env(plan.env, {})["TF_ENABLE_ONEDNN_OPTS"] == "1"
