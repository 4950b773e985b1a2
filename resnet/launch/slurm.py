"""Inside a Slurm allocation: the launch command from Slurm's variables, and requeue on pre-emption.

launch/slurm_*.sbatch exec `python -m resnet.launch.slurm MODEL_DIR [train_dist.py flags]`, which
  1. reads the allocation (SLURM_JOB_ID, SLURM_NNODES, SLURM_NTASKS_PER_NODE, SLURM_CPUS_PER_TASK),
  2. sets each rank's threads to its own physical cores (the launch plan's rules),
  3. runs srun (PMIx or PMI2) or mpirun over the allocation, ranks bound to cores,
  4. forwards SIGUSR1/SIGTERM from Slurm (`#SBATCH --signal=B:USR1@120`) to the ranks, which finish
     their step, checkpoint and exit 3; then it requeues the job, and the requeued job resumes.
"""

import argparse
import os
import shlex
import signal
import subprocess
import sys
from typing import Dict, List, Mapping, Sequence, Tuple

from resnet.errors import EXIT_REQUEUE, EXIT_USAGE, UsageError
from resnet.launch import CHECKOUT, network
from resnet.launch.commands import open_mpi
from resnet.runtime import threads, topology
from resnet.runtime.env import launch_env, rank_env

LAUNCHERS = ("srun", "mpirun")


def _int(env: Mapping[str, str], name: str, default=None) -> int:
    raw = env.get(name)
    if raw is None:
        if default is None:
            raise UsageError(f"${name} is not set: run this inside a Slurm job (sbatch)")
        return default
    try:
        return int(raw.split("(")[0].split(",")[0])  # "2(x3)" in SLURM_TASKS_PER_NODE style
    except ValueError as e:
        raise UsageError(f"${name}={raw}: not a number") from e


def plan(env: Mapping[str, str], model_dir: str, train_args: Sequence[str], launcher: str,
         python: str, train_script: str, mpi: str = "pmix",
         threads_per_core: int = 1, net_env: Mapping[str, str] = ()) -> Tuple[List[str],
                                                                        Dict[str, str]]:
    """(command, extra environment) for the ranks of this allocation. Pure: tested directly.
    `net_env`: Open MPI's network variables (network.open_mpi_env), for every rank."""
    if "SLURM_JOB_ID" not in env:
        raise UsageError("no Slurm allocation ($SLURM_JOB_ID is not set): submit with sbatch, "
                         "e.g. sbatch launch/slurm_1node.sbatch MODEL_DIR")
    nodes = _int(env, "SLURM_NNODES", 1)
    per_node = _int(env, "SLURM_NTASKS_PER_NODE", None) if "SLURM_NTASKS_PER_NODE" in env \
        else max(1, _int(env, "SLURM_NTASKS", 1) // nodes)
    cpus = _int(env, "SLURM_CPUS_PER_TASK", 1)
    if cpus < 1 or per_node < 1:
        raise UsageError(f"--cpus-per-task={cpus} --ntasks-per-node={per_node}: need at least 1")
    # Slurm counts logical CPUs; the rule counts physical cores (hyper-thread siblings once).
    cores = max(1, cpus // threads_per_core)
    rank = threads.for_rank(cores, 1, threads_per_core)
    extra = {**rank_env(rank, nodes), **dict(net_env)}
    program = [python, train_script, f"--model_dir={model_dir}"] + list(train_args)
    n = nodes * per_node
    if launcher == "srun":
        cmd = ["srun", f"--ntasks={n}", f"--ntasks-per-node={per_node}",
               f"--cpus-per-task={cpus}", "--cpu-bind=cores", f"--mpi={mpi}",
               "--kill-on-bad-exit=1"]  # one dead rank ends the step instead of hanging it
    elif launcher == "mpirun":  # Open MPI reads the allocation itself
        cmd = open_mpi(n, f"ppr:{per_node}:node:pe={cores}", extra)
    else:
        raise UsageError(f"--launcher={launcher}: use srun or mpirun")
    return cmd + program, extra


def requeue(job_id: str) -> None:
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet.launch.slurm",
                                description="Launch train_dist.py over this Slurm allocation.")
    p.add_argument("model_dir")
    p.add_argument("--launcher", choices=LAUNCHERS, default=os.environ.get("LAUNCHER", "srun"))
    p.add_argument("--mpi", default=os.environ.get("SLURM_MPI", "pmix"))
    p.add_argument("--dry_run", action="store_true")
    args, train_args = p.parse_known_args(argv)
    try:
        net_env, said = network.open_mpi_env(os.environ)
        cmd, extra = plan(os.environ, os.path.abspath(args.model_dir), train_args, args.launcher,
                          sys.executable, os.path.join(CHECKOUT, "train_dist.py"), args.mpi,
                          topology.read().threads_per_core, net_env)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(said)
    print("env: " + " ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    print("command: " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    child = subprocess.Popen(cmd, env=launch_env(extra, os.environ))
    forwarded = []

    def forward(signum, frame):  # Slurm's warning reaches the batch shell: pass it to the ranks
        forwarded.append(signum)
        child.send_signal(signum)
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, forward)
    rc = child.wait()
    # Ranks that checkpointed on a signal exit 3; the first one out makes srun --kill-on-bad-exit
    # terminate the rest, so srun's own code can be another non-zero one. After a forwarded
    # signal, any failure of the step means "checkpointed, or killed while stopping": requeue.
    if rc == EXIT_REQUEUE or (forwarded and rc != 0):
        print(f"checkpointed on a signal: requeueing job {os.environ['SLURM_JOB_ID']}",
              flush=True)
        requeue(os.environ["SLURM_JOB_ID"])
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
