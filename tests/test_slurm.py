"""The Slurm batch scripts on a real one-node Slurm cluster (slurmctld + slurmd on this machine)."""

import json
import os
import subprocess

import pytest

import slurm_cluster
from conftest import ROOT, job_env
from resnet.launch import slurm
from resnet.errors import UsageError

SCRIPT = os.path.join(ROOT, "launch", "slurm_1node.sbatch")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.ensure_installed()
    if reason:
        pytest.skip(reason)
    c = slurm_cluster.Cluster(str(tmp_path_factory.mktemp("slurm")))
    try:
        c.start()
    except BaseException:  # a daemon that did start is stopped even when the node never came up
        c.stop()
        raise
    c.env.update({k: v for k, v in job_env().items() if k not in os.environ or
                  k in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")})
    yield c
    c.stop()


def _submit(cluster, tmp_path, name, model_dir, image_tar, *flags):
    out = tmp_path / f"{name}.out"
    job = cluster.sbatch(["--ntasks-per-node=2", "--cpus-per-task=1", f"--output={out}",
                          SCRIPT, str(model_dir), f"--data_dir={image_tar}", "--weights=none",
                          "--image_size=32", "--batch_size=8", "--log_every_steps=1", *flags],
                         cwd=ROOT)
    return job, out


@pytest.mark.slow  # real Slurm jobs
@pytest.mark.xdist_group("hosts")  # with test_cluster.py's: one munged for both
def test_preemption_signal_checkpoints_and_requeues(cluster, tmp_path, image_tar):
    model_dir = tmp_path / "m"
    job, out = _submit(cluster, tmp_path, "preempt", model_dir, image_tar, "--epochs=3")
    cluster.preempt_when(job, out, "epoch 1/3 step 2/")
    info = cluster.wait(job, timeout=1200, until=("COMPLETED", "FAILED", "CANCELLED"))
    log = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-4000:]
    assert "--mpi=pmix" in log and "--cpu-bind=cores" in log
    # Slurm bound each task to its own core (the placement table, both runs).
    cpus = [l.split()[-1] for l in log.splitlines()
            if l.strip().startswith(("0  ", "1  ")) and len(l.split()) == 6]
    assert len(cpus) == 4 and cpus[0] != cpus[1], log[-3000:]
    assert "WARNING: ranks" not in log
    # The requeued run resumed (the same script resubmitted is the same resume path).
    assert f"requeueing job {job}" in log
    assert "resuming from" in log
    assert int(info.get("Restarts", "0")) == 1
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["world_size"] == 2


def test_script_outside_slurm_refuses(tmp_path):
    env = {k: v for k, v in job_env().items() if not k.startswith("SLURM_")}
    proc = subprocess.run([SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no Slurm allocation" in proc.stderr


def test_plan_from_slurm_variables():
    env = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "4", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_CPUS_PER_TASK": "56"}
    cmd, extra = slurm.plan(env, "/m", ["--epochs=2"], "srun", "py", "t.py", threads_per_core=2)
    assert cmd[:7] == ["srun", "--ntasks=8", "--ntasks-per-node=2", "--cpus-per-task=56",
                       "--cpu-bind=cores", "--mpi=pmix", "--kill-on-bad-exit=1"]
    assert cmd[-4:] == ["py", "t.py", "--model_dir=/m", "--epochs=2"]
    assert extra["OMP_NUM_THREADS"] == "28"  # physical cores of the task
    assert extra["OMPI_MCA_coll_tuned_allreduce_algorithm"] == "4"  # 4 nodes: the ring
    cmd, _ = slurm.plan(env, "/m", [], "mpirun", "py", "t.py")
    assert cmd[:6] == ["mpirun", "-np", "8", "--map-by", "ppr:2:node:pe=56", "--bind-to"]
    assert "OMPI_MCA_coll_tuned_allreduce_algorithm" in cmd[cmd.index("-x") + 1::2]
    _, one = slurm.plan(dict(env, SLURM_NNODES="1"), "/m", [], "srun", "py", "t.py")
    assert "OMPI_MCA_coll_tuned_allreduce_algorithm" not in one
    with pytest.raises(UsageError, match="no Slurm allocation"):
        slurm.plan({}, "/m", [], "srun", "py", "t.py")


def test_slurm_variable_that_is_not_a_number():
    env = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_CPUS_PER_TASK": "lots"}
    with pytest.raises(UsageError, match=r"\$SLURM_CPUS_PER_TASK=lots: not a number"):
        slurm.plan(env, "/m", [], "srun", "py", "t.py")
