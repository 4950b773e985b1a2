"""The job across hosts: an emulated cluster of 3 (tools/netcluster.py: network namespaces with
their own hostnames and sshd, on one bridge), every rank started over ssh by the real
launchers, as on a cluster. Each host sees the same files (the checkout, the data), as over NFS.
Every host also carries Docker's default bridge, docker0 at 172.17.0.1/16 on each, as Docker
leaves it on most cluster nodes it is installed on: every launch path here must leave it out.

Every rank shares this machine's 2 cores with the others, so these tests prove placement, the
network and failures, not speed (benchmarks/allreduce.py measures the network, isolated).
"""

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tools import netcluster
import slurm_cluster
from conftest import ROOT, rank_pids
from resnet.training import checkpoints

# "hosts": one pytest-xdist worker runs every test that starts namespaces or Slurm daemons, one
# after another (tools/test.sh runs two workers). Two Slurm clusters would share the one munged,
# and the first to stop would stop it under the other.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hosts")]

MPIRUN = os.path.join(ROOT, "launch", "mpirun.sh")
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
PYTHON = sys.executable
TRAIN = os.path.join(ROOT, "train_dist.py")


@pytest.fixture(scope="module")
def cluster():
    why = netcluster.unavailable()
    if why:
        pytest.skip(f"no emulated cluster here: {why}")
    c = netcluster.Cluster(hosts=3, docker_bridge=True).start()
    try:
        yield c
    finally:
        c.stop()


def _job_flags(image_tar, model_dir, *extra):
    return [f"--data_dir={image_tar}", f"--model_dir={model_dir}", "--weights=none",
            "--image_size=32", "--batch_size=8", "--learning_rate=0.001", "--log_every_steps=1",
            *extra]


def _env(cluster):
    return cluster.env(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def _placement(log):
    """(rank, host) of each row of the start-up placement table."""
    return re.findall(r"^(?:\[[^\]]*\]<stderr>:)?\s*(\d+)\s+(node\d)\s+\d+\s+\d+\s+\d+\s+[\d,-]+$",
                      log, re.M)


def test_mpirun_script_puts_a_rank_on_each_host_over_the_network_they_share(cluster, tmp_path,
                                                                          image_tar):
    """node1 also has eth1 on 10.88.0.0/24, which node2 routes to but cannot reach (node1
    answers ARP only on the interface that holds an address): an MPI that tried eth1 would
    wait. The plan must leave it out, say so, and the job must run over eth0."""
    ns1, ns2 = cluster.ns("node1"), cluster.ns("node2")
    # A veth pair with both ends in node1: an interface that leads nowhere else.
    netcluster._sh(["ip", "-n", ns1, "link", "add", "eth1", "type", "veth", "peer", "name",
                    "eth1p"])
    try:
        for args in (["ip", "-n", ns1, "link", "set", "eth1p", "up"],
                     ["ip", "-n", ns1, "addr", "add", "10.88.0.1/24", "dev", "eth1"],
                     ["ip", "-n", ns1, "link", "set", "eth1", "up"],
                     ["ip", "netns", "exec", ns1, "sysctl", "-qw",
                      "net.ipv4.conf.all.arp_ignore=1"],
                     ["ip", "-n", ns2, "route", "add", "10.88.0.0/24", "dev", "eth0"]):
            netcluster._sh(args)
        model_dir = tmp_path / "m"
        proc = cluster.run("node1", [MPIRUN, "--nodes", "2", "--ranks_per_node", "1",
                                     "--hosts", "node1:1,node2:1", "--"] +
                           _job_flags(image_tar, model_dir, "--epochs=1"), cwd=ROOT,
                           env=_env(cluster), timeout=600)
        log = proc.stdout + proc.stderr
        assert _placement(log) == [("0", "node1"), ("1", "node2")], log[-3000:]
        assert ("network: 10.77.0.0/24 (eth0): the network every host has an address in; "
                "left out: docker0 (172.17.0.0/16): a container or VM bridge, "
                "eth1 (10.88.0.0/24): not every host has it") in log
        assert "btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24" in log
        metrics = json.loads((model_dir / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["test_examples"] == 40
        # Named instead: a name the other host lacks is refused before anything starts.
        proc = cluster.run("node1", [os.path.join(ROOT, "launch", "horovodrun.sh"), "-H",
                                     "node1:1,node2:1", "--network-interfaces", "eth1",
                                     "--dry_run"], cwd=ROOT, env=_env(cluster), check=False,
                           timeout=120)
        assert proc.returncode == 2 and "--network-interfaces=eth1: node2 has no eth1" in \
            proc.stderr, proc.stdout + proc.stderr
    finally:
        subprocess.run(["ip", "-n", ns1, "link", "del", "eth1"], capture_output=True, timeout=30)
        subprocess.run(["ip", "-n", ns2, "route", "del", "10.88.0.0/24"], capture_output=True,
                       timeout=30)
        subprocess.run(["ip", "netns", "exec", ns1, "sysctl", "-qw",
                        "net.ipv4.conf.all.arp_ignore=0"], capture_output=True, timeout=30)


def test_hosts_reached_only_through_open_mpis_agent_and_a_network_that_does_not_route(
        cluster, tmp_path, image_tar):
    """No ssh on PATH leads to the hosts: only $OMPI_MCA_plm_rsh_agent does (a site's own ssh
    wrapper), and the launch plan must reach them the way Open MPI will. Every host also has
    eth2 in 10.66.0.0/24 at its own address, each on a link that leads nowhere: shared by
    address, not by route. The probe must leave it out, and the job train over eth0."""
    names = ["node1", "node2"]
    try:
        _dead_end_interfaces(cluster, names)
        env = _env(cluster)
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if p != cluster.bin)
        assert env["OMPI_MCA_plm_rsh_agent"].startswith(cluster.bin)
        log = _trains_on_node1_and_node2_over_eth0(
            cluster, "node1", [MPIRUN, "--nodes", "2", "--ranks_per_node", "1", "--hosts",
                               "node1:1,node2:1", "--"], env, tmp_path, image_tar,
            r"node2's 10\.66\.0\.2 is not reachable from here")
        assert "docker0 (172.17.0.0/16): a container or VM bridge" in log
    finally:
        _remove_dead_ends(cluster, names)


def test_horovods_ssh_port_and_key_and_a_fabric_only_the_launcher_reaches(cluster, tmp_path,
                                                                          image_tar):
    """Launched from node3 (a login node) onto node1 and node2, whose sshd takes only another
    key on another port (horovodrun --ssh-port, --ssh-identity-file): the plan must reach the
    hosts that way, and so must horovodrun and Open MPI. eth2 is a fabric that node3 reaches
    both hosts through (node3 holds the other end of each host's link) but that leads from
    neither host to the other: probed back from node2, it is left out."""
    key = tmp_path / "key2"
    netcluster._sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    (tmp_path / "authorized2").write_text((tmp_path / "key2.pub").read_text())
    # A client that offers no key of its own: the port-22 sshd takes only the cluster's key.
    (tmp_path / "ssh_config").write_text(
        "Host *\n  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking no\n  LogLevel ERROR\n  BatchMode yes\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {tmp_path}/ssh_config \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    env = _env(cluster)
    env["PATH"] = os.pathsep.join([str(bin_dir)] + [p for p in env["PATH"].split(os.pathsep)
                                                     if p != cluster.bin])
    env["OMPI_MCA_plm_rsh_agent"] = str(bin_dir / "ssh")
    hosts, pid_files = ["node1", "node2"], []
    try:
        for i, host in enumerate(hosts, 1):
            config = tmp_path / f"sshd2-{host}.conf"
            pid_files.append(tmp_path / f"sshd2-{host}.pid")
            config.write_text(f"Port 2222\nHostKey {cluster.dir}/host_key\n"
                              f"PidFile {pid_files[-1]}\n"
                              f"AuthorizedKeysFile {tmp_path}/authorized2\n"
                              "PermitRootLogin yes\nPasswordAuthentication no\n"
                              "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                              "LogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n")
            cluster.run(host, ["/usr/sbin/sshd", "-f", str(config)])
            ns, peer = cluster.ns(host), f"s{i}"
            netcluster._sh(["ip", "-n", ns, "link", "add", "eth2", "type", "veth", "peer", "name",
                            peer, "netns", cluster.ns("node3")])
            for args in ([ns, "addr", "add", f"10.66.0.{i}/24", "dev", "eth2"],
                         [ns, "link", "set", "eth2", "up"],
                         [cluster.ns("node3"), "addr", "add", "10.66.0.3/32", "dev", peer],
                         [cluster.ns("node3"), "link", "set", peer, "up"],
                         [cluster.ns("node3"), "route", "add", f"10.66.0.{i}/32", "dev", peer]):
                netcluster._sh(["ip", "-n", *args])
        # The premise: the key goes nowhere on port 22, and port 2222 takes it.
        for port, code in (("22", 255), ("2222", 0)):
            proc = cluster.run("node3", [str(bin_dir / "ssh"), "-p", port, "-i", str(key),
                                         "node1", "true"], env=env, check=False, timeout=60)
            assert proc.returncode == code, (port, proc.stderr)
        log = _trains_on_node1_and_node2_over_eth0(
            cluster, "node3", [os.path.join(ROOT, "launch", "horovodrun.sh"), "-H",
                               "node1:1,node2:1", "--ssh-port", "2222", "--ssh-identity-file",
                               str(key), "--"], env, tmp_path, image_tar,
            r"node2 cannot reach node1 \(10\.66\.0\.1\) through it")
        assert f"--ssh-port 2222 --ssh-identity-file {key}" in log
    finally:
        for pid_file in pid_files:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        _remove_dead_ends(cluster, hosts)


def _trains_on_node1_and_node2_over_eth0(cluster, host, launch, env, tmp_path, image_tar,
                                         why_eth2):
    """Run `launch` + a one-epoch job from `host`: a rank on node1 and node2, the plan keeping
    eth0 and leaving out eth2 for `why_eth2` (a pattern). Returns the log."""
    model_dir = tmp_path / "m"
    proc = cluster.run(host, launch + _job_flags(image_tar, model_dir, "--epochs=1"), cwd=ROOT,
                       env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert _placement(log) == [("0", "node1"), ("1", "node2")], log[-3000:]
    assert re.search(r"network: 10\.77\.0\.0/24 \(eth0\): .*eth2 \(10\.66\.0\.0/24\): " +
                     why_eth2, log), log[-3000:]
    assert json.loads((model_dir / "metrics.json").read_text())["world_size"] == 2
    return log


def _dead_end_interfaces(cluster, names):
    """eth2 on each host, at 10.66.0.<i>/24: one network by its addresses, each host's link
    leading nowhere (a veth pair with both ends in the host)."""
    for i, host in enumerate(names, 1):
        for args in (["link", "add", "eth2", "type", "veth", "peer", "name", "eth2p"],
                     ["link", "set", "eth2p", "up"],
                     ["addr", "add", f"10.66.0.{i}/24", "dev", "eth2"],
                     ["link", "set", "eth2", "up"]):
            netcluster._sh(["ip", "-n", cluster.ns(host), *args])


def _remove_dead_ends(cluster, names):
    for host in names:
        subprocess.run(["ip", "-n", cluster.ns(host), "link", "del", "eth2"],
                       capture_output=True, timeout=30)


def test_ranks_that_cannot_reach_each_other_end_at_the_startup_deadline(cluster, tmp_path,
                                                                        image_tar):
    """mpirun typed by hand with its TCP transport on eth2 (on every host, leading nowhere)
    and its daemons on eth0: the ranks start, then cannot reach each other. Each must end
    within --startup_timeout saying which host it is on and which network it was given, and
    the job exit non-zero, instead of waiting forever."""
    names = ["node1", "node2"]
    model_dir = tmp_path / "m"
    try:
        _dead_end_interfaces(cluster, names)
        cmd = ["mpirun", "--allow-run-as-root", "-np", "2", "-H", "node1:1,node2:1",
               "--mca", "oob_tcp_if_include", "eth0", "--mca", "btl_tcp_if_include", "eth2",
               "-x", "PYTHONPATH", "-x", "PATH", "-x", "TF_CPP_MIN_LOG_LEVEL", PYTHON, TRAIN]
        cmd += _job_flags(image_tar, model_dir, "--epochs=1", "--startup_timeout=30")
        proc = cluster.run("node1", cmd, cwd=ROOT, env=_env(cluster), timeout=400, check=False)
    finally:
        _remove_dead_ends(cluster, names)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert re.search(r"error: rank \d on node\d: Horovod's start-up and the first collective "
                     r"did not finish within 30 s", log), log[-3000:]
    assert "eth2 (OMPI_MCA_btl_tcp_if_include)" in log
    assert not (model_dir / "metrics.json").exists()


def test_plain_horovodrun_across_hosts_then_eval_on_two_hosts_equals_one_process(
        cluster, tmp_path, image_tar):
    model_dir = tmp_path / "m"
    # As users type it: no launch script, horovodrun's own ssh checks and interface probe.
    cluster.run("node1", [HOROVODRUN, "-np", "2", "-H", "node1:1,node2:1", PYTHON, TRAIN] +
                _job_flags(image_tar, model_dir, "--epochs=1"), cwd=ROOT, env=_env(cluster),
                timeout=600)
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["world_size"] == 2
    results = {}
    for ranks, host, cmd in [
            (2, "node2", [HOROVODRUN, "-np", "2", "-H", "node2:1,node3:1", PYTHON, TRAIN]),
            (1, "node3", [PYTHON, TRAIN])]:
        proc = cluster.run(host, cmd + _job_flags(image_tar, model_dir, "--eval_only"), cwd=ROOT,
                           env=_env(cluster), timeout=600)
        if ranks == 2:
            assert _placement(proc.stdout + proc.stderr) == [("0", "node2"), ("1", "node3")]
        results[ranks] = json.loads((model_dir / "metrics.json").read_text())
        assert results[ranks]["mode"] == "eval_only" and results[ranks]["world_size"] == ranks
    one, two = results[1], results[2]
    predicted = [sum(col) for col in zip(*one["confusion_matrix"])]
    assert sum(1 for c in predicted if c) >= 2, one["confusion_matrix"]  # not a constant model
    assert one["test_accuracy"] == two["test_accuracy"]
    assert one["confusion_matrix"] == two["confusion_matrix"]


def test_a_model_dir_that_one_host_does_not_share_is_refused_before_training(cluster, tmp_path,
                                                                           image_tar):
    """node2 has a folder of its own where node1 and node3 share one (a node-local disk where
    the others mount NFS): the job stops on every rank, naming the host, before any training,
    and leaves nothing behind; on hosts that share it, the same command trains."""
    model_dir = tmp_path / "runs" / "m"
    cmd = [MPIRUN, "--nodes", "2", "--ranks_per_node", "1", "--hosts", "{}:1,{}:1", "--"] + \
        _job_flags(image_tar, model_dir, "--epochs=1", "--max_train_examples=16")
    cluster.private_dir("node2", str(tmp_path))
    try:
        proc = cluster.run("node1", [a.format("node1", "node2") for a in cmd], cwd=ROOT,
                           env=_env(cluster), check=False, timeout=600)
    finally:
        cluster.shared_dir("node2", str(tmp_path))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    # Rank 0 is whichever process Horovod made rank 0: the other host is the one named.
    named = re.search(r"host\(s\) (node\d) do not see the folder that rank 0 on (node\d) writes",
                      log)
    assert named and set(named.groups()) == {"node1", "node2"}, log[-3000:]
    assert "step 1/" not in log  # no training step ran
    assert list(tmp_path.iterdir()) == []  # no model_dir made, the marker removed
    proc = cluster.run("node1", [a.format("node1", "node3") for a in cmd], cwd=ROOT,
                       env=_env(cluster), timeout=600)
    assert json.loads((model_dir / "metrics.json").read_text())["world_size"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shared-check-")]


def test_an_unreachable_host_at_start_is_a_clear_error_not_a_hang(cluster):
    cluster.cut("node3")
    try:
        started = time.time()
        proc = cluster.run("node1", [MPIRUN, "--nodes", "2", "--ranks_per_node", "1", "--hosts",
                                     "node1:1,node3:1", "--", "--epochs=1"], cwd=ROOT,
                           env=_env(cluster), check=False, timeout=120)
        took = time.time() - started
    finally:
        cluster.heal("node3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "host node3: " in proc.stderr and "ssh" in proc.stderr, proc.stderr
    assert took < 60, took  # the thing tested: ssh's 15 s limit, not a hang


def test_a_link_cut_mid_epoch_ends_the_job_and_the_same_command_resumes(cluster, tmp_path,
                                                                         image_tar):
    model_dir = tmp_path / "m"
    cmd = [MPIRUN, "--nodes", "2", "--ranks_per_node", "1", "--hosts", "node1:1,node2:1",
           "--"] + _job_flags(image_tar, model_dir, "--epochs=2", "--hang_timeout=20")
    proc = cluster.popen("node1", cmd, cwd=ROOT, env=_env(cluster), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:  # epoch 1's checkpoint is on disk once epoch 2 steps
            seen.append(line)
            if "epoch 2/2 step 1/" in line:
                break
        cluster.cut("node2")
        cut_at = time.time()
        # Healed on an event, the watchdog's line (a rank saw no progress for 20 s), not on a
        # timer; a kill after 240 s bounds a job that never says it (the test then fails).
        bound = threading.Timer(240, os.killpg, [proc.pid, signal.SIGKILL])
        bound.start()
        try:
            for line in proc.stdout:
                seen.append(line)
                if re.search(r"rank \d on node\d: no progress for", line):
                    cluster.heal("node2")
                    break
            rest = proc.communicate(timeout=240)[0]
            ended = time.time() - cut_at
        finally:
            bound.cancel()
            cluster.heal("node2")  # idempotent: up again whatever happened
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    log = "".join(seen) + rest
    assert proc.returncode != 0, log[-3000:]
    assert ended < 150, ended  # the thing tested: the watchdog's 20 s, then the clean-up
    # Who was lost: the watchdog names the rank and its host, Open MPI the host it lost.
    assert re.search(r"rank \d on node\d: no progress for", log), log[-3000:]
    names = checkpoints.all_names(str(model_dir))
    assert "ckpt-0001-000000" in names
    for name in names:  # every checkpoint written is whole
        assert checkpoints.verify(os.path.join(checkpoints.directory(str(model_dir)), name)) \
            is None
    assert not (model_dir / "metrics.json").exists()
    # The same command again resumes from epoch 1's checkpoint and finishes, once node2 answers
    # ssh again and its ranks of the first run are gone. --hang_timeout goes back to its
    # default: 20 s is for the cut; a loaded machine can spend that in one checkpoint write.
    cluster.wait_ssh()
    _wait_gone(cluster, "node2", str(model_dir))
    again = [f for f in cmd if not f.startswith("--hang_timeout")]
    proc = cluster.run("node1", again, cwd=ROOT, env=_env(cluster), timeout=600)
    log = proc.stdout + proc.stderr
    assert "resuming from" in log and "epoch 2, step 0" in log, log[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]


# --- Slurm across hosts -------------------------------------------------------------------------

MULTINODE = os.path.join(ROOT, "launch", "slurm_multinode.sbatch")


@pytest.fixture(scope="module")
def slurm(cluster, tmp_path_factory):
    """slurmctld on node1, a slurmd on node1 and node2 (node3 stays out of it)."""
    reason = slurm_cluster.ensure_installed()
    if reason:
        pytest.skip(reason)
    two = netcluster.Cluster.__new__(netcluster.Cluster)  # the same hosts, the first two only
    two.__dict__.update(cluster.__dict__, names=cluster.names[:2])
    s = slurm_cluster.MultiNode(str(tmp_path_factory.mktemp("slurm2")), two)
    s.env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _sbatch(slurm, tmp_path, name, model_dir, image_tar, *flags, launcher="srun"):
    out = tmp_path / f"{name}.out"
    job = slurm.sbatch(["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=2",
                        f"--export=ALL,LAUNCHER={launcher}", f"--output={out}", MULTINODE,
                        str(model_dir)] + [f for f in _job_flags(image_tar, model_dir, *flags)
                                           if not f.startswith("--model_dir")],
                       cwd=ROOT)
    return job, out


def test_slurm_job_spans_two_nodes_is_preempted_requeued_then_resumed_under_mpirun(
        slurm, tmp_path, image_tar):
    """About 5-6 minutes: the srun job runs twice (before and after its requeue; Slurm waits
    KillWait and the requeue delay between them), then a resubmission under mpirun."""
    model_dir = tmp_path / "m"
    job, out = _sbatch(slurm, tmp_path, "srun", model_dir, image_tar, "--epochs=2")
    slurm.preempt_when(job, out, "epoch 1/2 step 2/")
    info = slurm.wait(job, timeout=1200, until=("COMPLETED", "FAILED", "CANCELLED"))
    log = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-4000:]
    assert "command: srun --ntasks=2 --ntasks-per-node=1 --cpus-per-task=2" in log
    # docker0 is on both nodes at the same address: Open MPI is told to leave it out.
    assert "left out: docker0 (172.17.0.0/16): a container or VM bridge" in log
    assert "OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,172.17.0.0/16" in log
    # The output file holds both runs (Slurm appends on a requeue): the same placement twice.
    assert _placement(log) == [("0", "node1"), ("1", "node2")] * 2, log[-3000:]
    assert f"requeueing job {job}" in log and "resuming from" in log
    assert int(info.get("Restarts", "0")) == 1
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    # Resubmitted under mpirun (Open MPI reads the allocation): it resumes where srun ended.
    job, out = _sbatch(slurm, tmp_path, "mpirun", model_dir, image_tar, "--epochs=3",
                       launcher="mpirun")
    info = slurm.wait(job, timeout=900)
    log = out.read_text()
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert "command: mpirun -np 2 --map-by ppr:1:node:pe=2" in log
    assert "-x OMPI_MCA_btl_tcp_if_exclude" in log
    assert _placement(log) == [("0", "node1"), ("1", "node2")], log[-3000:]
    assert "resuming from" in log and "epoch 3, step 0" in log
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["world_size"] == 2


# --- Elastic across hosts ----------------------------------------------------------------------

def _pids_on(cluster, host, marker):
    """PIDs of train_dist.py processes of this test (`marker` in the command line) on `host`."""
    out = subprocess.run(["ip", "netns", "pids", cluster.ns(host)], capture_output=True,
                         text=True, timeout=30).stdout.split()
    pids = []
    for pid in out:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"train_dist.py" in cmdline and marker.encode() in cmdline:
            pids.append(int(pid))
    return pids


def _wait_gone(cluster, host, marker, bound=120):
    """Until `host` runs no train_dist.py of this test (a rank killed by its launcher can take
    a moment to go); past `bound` seconds, a failure, not a wait for ever."""
    deadline = time.monotonic() + bound
    while _pids_on(cluster, host, marker):
        assert time.monotonic() < deadline, f"{host} still runs {_pids_on(cluster, host, marker)}"
        time.sleep(0.5)


def _elastic(cluster, tmp_path, image_tar, hosts_text, np_, *extra, env=None):
    model_dir = tmp_path / "m"
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(hosts_text)
    cmd = [os.path.join(ROOT, "launch", "horovodrun.sh"), "-np", str(np_), "--min-np", "2",
           "--max-np", "3", "--hosts-file", str(hosts), "--"] + _job_flags(
        image_tar, model_dir, "--batch_size=4", "--epochs=2", "--commit_every_steps=2", *extra)
    proc = cluster.popen("node1", cmd, cwd=ROOT, env=dict(_env(cluster), **(env or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    return proc, model_dir, hosts


def _read_until(proc, pattern, seen, timeout=600):
    deadline = time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return
        assert time.time() < deadline, "".join(seen)[-3000:]
    raise AssertionError(f"never saw {pattern!r}:\n{''.join(seen)[-3000:]}")


def _finish(proc, seen, timeout=900):
    try:
        rest = proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return "".join(seen) + rest


def _eval_alone_equals(cluster, image_tar, model_dir, trained):
    cluster.run("node1", [PYTHON, TRAIN] + _job_flags(image_tar, model_dir, "--eval_only"),
                cwd=ROOT, env=_env(cluster), timeout=600)
    alone = json.loads((model_dir / "metrics.json").read_text())
    assert alone["confusion_matrix"] == trained["confusion_matrix"]
    assert alone["test_accuracy"] == trained["test_accuracy"]


def test_elastic_a_host_joins_then_rank_0_is_killed_and_the_others_finish(cluster, tmp_path,
                                                                          image_tar):
    """About 4 minutes: the job re-forms twice (3 ranks when node3 joins, 2 after rank 0 dies),
    each time a worker start-up and Horovod's rendezvous, then a 1-process evaluation."""
    proc, model_dir, hosts = _elastic(cluster, tmp_path, image_tar, "node1:1\nnode2:1\n", 2)
    seen = []
    try:
        _read_until(proc, r"epoch 1/2 step 2/", seen)
        with open(hosts, "a") as f:  # node3 comes up: the discovery script offers it
            f.write("node3:1\n")
        _read_until(proc, r"elastic: 3 rank\(s\)", seen)
        _read_until(proc, r"epoch \d/2 step \d+/", seen)  # node3's rank trains
        # Rank 0: the checkpoint writer and the root of every broadcast (Horovod keeps it where
        # it was when a host joins). A survivor on another host takes both over.
        victims = rank_pids(0, str(model_dir), "HOROVOD_RANK")
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        log = _finish(proc, seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r"elastic: 2 rank\(s\), global batch 8; at epoch 1, 0 of 80", log)
    # node3 took the weights and the position of the last commit: training went on from there
    # with 3 ranks, not from the start of the epoch.
    joined = re.search(r"elastic: 3 rank\(s\), global batch 12; at epoch (\d), (\d+) of 80", log)
    assert joined and (int(joined.group(1)), int(joined.group(2))) > (1, 0), log[-4000:]
    # After rank 0 died the two left went back to the last commit: at or after the join, not
    # to the start of the epoch.
    back = re.findall(r"elastic: 2 rank\(s\), global batch 8; at epoch (\d), (\d+) of 80", log)
    assert len(back) >= 2, log[-4000:]  # the start, and the roll-back
    (epoch, done), (joined_epoch, joined_done) = map(int, back[-1]), map(int, joined.groups())
    assert (epoch, done) >= (joined_epoch, joined_done), log[-4000:]
    # ...a commit: every 2 steps of 3 x 4 examples, counted from the join in its epoch.
    since = done - joined_done if epoch == joined_epoch else done
    assert since % 24 == 0, (epoch, done, joined_epoch, joined_done)
    # The rest of that epoch dealt to the 2 ranks left, 4 examples each per step.
    steps = math.ceil((80 - done) / 8)
    assert f"epoch {epoch}/2 step {steps}/{steps} " in log, log[-4000:]
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["mode"] == "elastic" and trained["world_size"] == 2
    assert trained["history"][-1]["world_size"] == 2 and trained["test_examples"] == 40
    # The new rank 0 wrote the last epoch's checkpoint.
    assert checkpoints.all_names(str(model_dir))[-1] == "ckpt-0002-000000"
    _eval_alone_equals(cluster, image_tar, model_dir, trained)


def test_elastic_a_host_whose_link_is_cut_is_left_behind(cluster, tmp_path, image_tar):
    """Horovod Elastic learns that a host is gone when the ssh session to its worker ends: with
    ssh's defaults (no keep-alives) a silent cut would leave the survivors waiting for that
    worker (seen here: still waiting after 15 minutes). So ssh keep-alives, as README asks of a
    cluster's ssh config for elastic runs: the session ends about 15 s after the cut."""
    keepalive = {"NETCLUSTER_SSH_OPTS": "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"}
    proc, model_dir, _ = _elastic(cluster, tmp_path, image_tar, "node1:1\nnode2:1\nnode3:1\n", 3,
                                  env=keepalive)
    seen = []
    try:
        _read_until(proc, r"epoch 1/2 step 2/", seen)
        cluster.cut("node3")
        try:
            log = _finish(proc, seen)
        finally:
            cluster.heal("node3")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r"elastic: 2 rank\(s\), global batch 8; at epoch 1, \d+ of 80", log), \
        log[-4000:]
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["world_size"] == 2 and trained["history"][-1]["world_size"] == 2
    _eval_alone_equals(cluster, image_tar, model_dir, trained)


# --- The test cluster's own clean-up ------------------------------------------------------------

def test_a_cluster_signalled_again_while_it_stops_still_leaves_nothing_behind():
    """`timeout` forwards its SIGTERM to a child that `pkill` also hit: the second one used to
    land inside stop() and leave the namespaces and sshds behind."""
    why = netcluster.unavailable()
    if why:
        pytest.skip(f"no emulated cluster here: {why}")
    proc = subprocess.Popen([PYTHON, os.path.join(ROOT, "tools", "netcluster.py"), "--hosts",
                             "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tag = f"rc{proc.pid}-"
    try:
        up = proc.stdout.readline()
        assert up.startswith("hosts node1, node2"), up + proc.stdout.read()
        up += proc.stdout.readline() + proc.stdout.readline()
        workdir = re.search(r"through (\S+)/bin/ssh", up).group(1)
        deadline = time.time() + 120
        while proc.poll() is None:  # SIGTERM, then again and again while it stops
            assert time.time() < deadline, "netcluster.py never ended"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.02)
        left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True, timeout=30).stdout.split()
                if ns.startswith(tag)]
        assert left == []
        assert not os.path.exists(workdir)
        sshds = subprocess.run(["pgrep", "-f", f"sshd -f {workdir}/"], capture_output=True,
                               text=True, timeout=30).stdout.split()
        assert sshds == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        netcluster.remove_stale()  # if it failed: what it left, now that its owner is gone
