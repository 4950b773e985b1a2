"""Launch plans for stated topologies against hand-computed numbers; dry runs; refusals."""

import os
import subprocess

import pytest

from conftest import ROOT, job_env
from resnet.launch import commands, hosts as hosts_lib, layout as layout_lib
from resnet.runtime import env as env_lib, topology
from resnet.errors import UsageError

T = topology.Topology


def _cores(plan):
    return [s.cores for s in plan.slots]


def test_one_socket_two_cores_two_ranks():
    plan = layout_lib.make(T(1, 2, 1), 2)
    assert (plan.cores_per_rank, plan.intra_op_threads, plan.inter_op_threads) == (1, 1, 1)
    assert _cores(plan) == [(0,), (1,)]
    assert layout_lib.mpi_map_by(plan) == "ppr:2:socket:pe=1"
    assert plan.env == {"OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                        "TF_ENABLE_ONEDNN_OPTS": "1", "HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
                        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "600",
                        "OMPI_MCA_mpi_yield_when_idle": "1"}


def test_comm_tunings_yield_to_the_users_environment_the_rest_does_not():
    plan = layout_lib.make(T(1, 2, 1), 2)
    env = env_lib.launch_env(plan.env, {"OMPI_MCA_mpi_yield_when_idle": "0",
                                            "OMP_NUM_THREADS": "8", "PATH": "/bin"})
    assert env["OMPI_MCA_mpi_yield_when_idle"] == "0"  # the user's comparison setting
    assert env["OMP_NUM_THREADS"] == "1"  # the plan's threads per rank
    assert env["PATH"] == "/bin"
    assert env_lib.launch_env(plan.env, {})["OMPI_MCA_mpi_yield_when_idle"] == "1"


def test_across_hosts_open_mpi_allreduces_by_its_ring_unless_the_user_says_otherwise():
    ring = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
            "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"}
    one, two = layout_lib.make(T(1, 2, 1), 2), layout_lib.make(T(1, 2, 1), 2, nodes=2)
    assert not set(ring) & set(one.env)  # one host: Open MPI's own choice
    assert ring.items() <= two.env.items()
    mine = env_lib.launch_env(two.env, {"OMPI_MCA_coll_tuned_allreduce_algorithm": "6"})
    assert mine["OMPI_MCA_coll_tuned_allreduce_algorithm"] == "6"
    command = commands.command(two, "mpirun", ["python", "train_dist.py"],
                               commands.Where(hosts="a:2,b:2"))
    assert "-x OMPI_MCA_coll_tuned_allreduce_algorithm" in " ".join(command)


def test_two_sockets_28_cores_no_ht_one_rank_per_socket():
    plan = layout_lib.make(T(2, 28, 1), 2)
    assert plan.cores_per_rank == 28
    assert plan.intra_op_threads == 27  # one core left to Horovod's thread and tf.data
    assert plan.inter_op_threads == 2
    assert [s.sockets for s in plan.slots] == [(0,), (1,)]
    assert _cores(plan) == [tuple(range(0, 28)), tuple(range(28, 56))]
    assert layout_lib.mpi_map_by(plan) == "ppr:1:socket:pe=28"


def test_two_sockets_28_cores_with_ht():
    plan = layout_lib.make(T(2, 28, 2), 2, openmp=True)
    assert plan.intra_op_threads == 28  # the sibling hyper-threads host Horovod's thread
    assert plan.cpus_per_rank == 56
    assert plan.env["KMP_AFFINITY"] == "granularity=fine,compact,1,0"
    assert plan.env["KMP_BLOCKTIME"] == "1"
    no_omp = layout_lib.make(T(2, 28, 2), 2, openmp=False)
    assert "KMP_AFFINITY" not in no_omp.env


def test_four_ranks_on_two_sockets():
    plan = layout_lib.make(T(2, 28, 1), 4)
    assert (plan.ranks_per_socket, plan.cores_per_rank, plan.intra_op_threads) == (2, 14, 13)
    assert [s.sockets for s in plan.slots] == [(0,), (0,), (1,), (1,)]
    assert _cores(plan)[3] == tuple(range(42, 56))
    assert layout_lib.mpi_map_by(plan) == "ppr:2:socket:pe=14"


def test_one_rank_per_node_on_eight_nodes():
    plan = layout_lib.make(T(2, 28, 1), 1, nodes=8)
    assert plan.total_ranks == 8
    assert (plan.sockets_per_rank, plan.cores_per_rank) == (2, 56)
    assert (plan.intra_op_threads, plan.inter_op_threads) == (55, 2)
    assert layout_lib.mpi_map_by(plan) == "ppr:1:node:pe=56"
    cmd = commands.command(plan, "srun", ["python", "train_dist.py"])
    assert cmd[:7] == ["srun", "--nodes=8", "--ntasks=8", "--ntasks-per-node=1",
                       "--cpus-per-task=56", "--cpu-bind=cores", "--mpi=pmix"]


def test_uneven_cores_left_idle_is_stated():
    plan = layout_lib.make(T(1, 10, 1), 3)
    assert plan.cores_per_rank == 3
    assert any("1 core(s) per socket left idle" in n for n in plan.notes)


@pytest.mark.parametrize("topo, ranks, message", [
    (T(2, 28, 2), 60, "more ranks than cores; use at most 56"),
    (T(2, 28, 1), 3, "3 ranks do not divide evenly over 2 sockets.*Use 2 or 4"),
    (T(4, 8, 1), 3, "3 ranks cannot split 4 sockets evenly; use 2 or 4"),
    (T(1, 2, 1), 0, "need at least 1"),
])
def test_refusals(topo, ranks, message):
    with pytest.raises(UsageError, match=message):
        layout_lib.make(topo, ranks)


def test_zero_threads_or_cores_refused():
    with pytest.raises(UsageError, match="--cores_per_socket=0"):
        T(2, 0, 1)
    with pytest.raises(UsageError, match="--threads_per_core=0"):
        T(2, 4, 0)


def test_this_machine_is_read_alike_from_lscpu_and_from_sys():
    # Two independent sources of the same facts: lscpu's table and the kernel's /sys files.
    from_lscpu = topology._from_rows(topology._lscpu_rows())
    assert from_lscpu == topology._from_rows(topology._sys_rows()) == topology.read()
    assert from_lscpu.physical_cores * from_lscpu.threads_per_core >= len(
        os.sched_getaffinity(0)) >= 1


def _run(script, *args):
    return subprocess.run([os.path.join(ROOT, "launch", script)] + list(args), cwd=ROOT,
                          env=job_env(), capture_output=True, text=True, timeout=120)


def test_dry_run_prints_command_and_env():
    out = _run("mpirun.sh", "--dry_run", "--sockets", "2", "--cores_per_socket", "28",
               "--ranks_per_node", "2", "--nodes", "2", "--hosts", "n1:2,n2:2", "--",
               "--epochs=3")
    assert out.returncode == 0, out.stderr
    assert "plan: 2 node(s) x 2 rank(s) = 4; 28 core(s)/rank; intra-op 27, inter-op 2" in out.stdout
    assert ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=600 OMPI_MCA_coll_tuned_allreduce_algorithm=4 "
            "OMPI_MCA_coll_tuned_use_dynamic_rules=1 OMPI_MCA_mpi_yield_when_idle=1 "
            "OMP_NUM_THREADS=27 TF_ENABLE_ONEDNN_OPTS=1 TF_NUM_INTEROP_THREADS=2") in out.stdout
    command = [l for l in out.stdout.splitlines() if l.startswith("command: ")][0]
    assert command.startswith("command: mpirun -np 4 --map-by ppr:1:socket:pe=28 --bind-to core")
    assert "-H n1:2,n2:2" in command and "-x OMP_NUM_THREADS" in command
    assert "-x OMPI_MCA_mpi_yield_when_idle" in command
    assert command.endswith("train_dist.py --epochs=3")
    out = _run("horovodrun.sh", "--dry_run", "-np", "2", "--", "--epochs=1")
    assert out.returncode == 0, out.stderr
    assert "'--binding-args=--map-by ppr:2:socket:pe=1 --bind-to core'" in out.stdout


def test_scripts_refuse_bad_plans_and_show_usage():
    out = _run("mpirun.sh", "--dry_run", "--sockets", "2", "--cores_per_socket", "4",
               "--ranks_per_node", "9")
    assert out.returncode == 2 and "more ranks than cores" in out.stderr
    out = _run("mpirun.sh", "--dry_run", "--hostfile", "/nonexistent/hosts")
    assert out.returncode == 2 and "--hostfile=/nonexistent/hosts: No such file" in out.stderr
    for script in ("horovodrun.sh", "mpirun.sh", "discover_hosts.sh"):
        out = _run(script, "--help")
        assert out.returncode == 0 and f"Usage: launch/{script}" in out.stdout.replace(
            "ELASTIC_HOSTS_FILE=hosts.txt ", ""), out.stdout


def test_intel_mpi_and_srun_commands():
    plan = layout_lib.make(T(2, 28, 2), 2, nodes=2)
    cmd = commands.command(plan, "intel-mpirun", ["python", "t.py"], commands.Where(hosts="a,b"))
    assert cmd[:8] == ["mpirun", "-n", "4", "-ppn", "2", "-genv", "I_MPI_PIN_DOMAIN", "56:compact"]
    assert ["-genv", "OMP_NUM_THREADS", "28"] == cmd[cmd.index("OMP_NUM_THREADS") - 1:
                                                     cmd.index("OMP_NUM_THREADS") + 2]
    assert "-hosts" in cmd and cmd[-2:] == ["python", "t.py"]
    cmd = commands.command(plan, "srun", ["python", "t.py"], commands.Where(mpi="pmi2"))
    assert "--cpus-per-task=56" in cmd and "--mpi=pmi2" in cmd
    with pytest.raises(UsageError, match="--launcher=ssh"):
        commands.command(plan, "ssh", ["python"])


def test_half_a_stated_topology_is_refused():
    out = _run("mpirun.sh", "--dry_run", "--sockets", "2", "--ranks_per_node", "2")
    assert out.returncode == 2
    assert "--sockets and --cores_per_socket go together" in out.stderr


def test_elastic_dry_run_and_refusals(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# three names for this machine\nlocalhost:1\n127.0.0.1:1\nvm:2\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    one = tmp_path / "one.txt"
    one.write_text("localhost:2\n")
    out = _run("horovodrun.sh", "--dry_run", "-np", "3", "--min-np", "2", "--max-np", "4",
               "--hosts-file", str(hosts), "--", "--epochs=1")
    assert out.returncode == 0, out.stderr
    # The thread plan is for the most ranks one host runs (vm:2), not for -np.
    assert "plan: 1 node(s) x 2 rank(s)" in out.stdout
    command = [l for l in out.stdout.splitlines() if l.startswith("command: ")][0]
    assert command.startswith("command: horovodrun -np 3 --min-np 2 --max-np 4 "
                              "--host-discovery-script " + os.path.join(ROOT, "launch",
                                                                        "discover_hosts.sh"))
    assert "--binding-args" not in command  # Gloo: no mpirun binding
    assert command.endswith("train_dist.py --epochs=1 --elastic")
    for args, message in [
            (["-np", "3", "--min-np", "4", "--hosts-file", str(hosts)], "--min-np (4) <= -np (3)"),
            (["-np", "2", "--min-np", "1", "--hosts-file", str(tmp_path / "nope")],
             "nope: No such file"),
            (["-np", "2", "--min-np", "1"], "elastic mode needs --hosts_file"),
            (["-np", "2", "--min-np", "1", "--hosts-file", str(empty)], "names no host"),
            (["-np", "1", "--min-np", "1", "--max-np", "2", "--hosts-file", str(one)],
             "names one host: Horovod Elastic then waits for a second")]:
        out = _run("horovodrun.sh", "--dry_run", *args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    # With the interface named, one host is enough, and horovodrun is told it.
    out = _run("horovodrun.sh", "--dry_run", "-np", "1", "--min-np", "1", "--max-np", "2",
               "--hosts-file", str(one), "--network-interfaces", "lo")
    assert out.returncode == 0, out.stderr
    assert "discover_hosts.sh --network-interfaces lo " in out.stdout
    # Named for a fixed-size run too: passed on, and said.
    out = _run("horovodrun.sh", "--dry_run", "-np", "2", "--network-interfaces", "lo")
    assert out.returncode == 0, out.stderr
    assert "network: (lo): named by --network-interfaces" in out.stdout
    assert "horovodrun -np 2 -H localhost:2 --network-interfaces lo " in out.stdout
    with pytest.raises(UsageError, match="elastic mode needs horovodrun"):
        commands.command(layout_lib.make(T(1, 2, 1), 1), "mpirun", ["python"],
                            elastic=commands.Elastic(2, 1, 2, str(hosts)))


def test_discovery_script_reads_the_hosts_file(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("node1:4  # a comment\n\nnode2\n")
    script = os.path.join(ROOT, "launch", "discover_hosts.sh")
    env = job_env(ELASTIC_HOSTS_FILE=str(hosts), ELASTIC_SLOTS="2")
    out = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["node1:4", "node2:2"]
    # Edited while the job runs: the next call sees the change.
    hosts.write_text("node2:2\n")
    out = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["node2:2"]
    for text, message in [("node1:0\n", "hosts.txt:1: 'node1:0' is not host or host:slots"),
                          ("ok\nnode 3\n", "hosts.txt:2: 'node 3'")]:
        hosts.write_text(text)
        out = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    out = subprocess.run([script], env=job_env(ELASTIC_HOSTS_FILE=""), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "$ELASTIC_HOSTS_FILE is not set" in out.stderr


def test_one_host_list_parser_for_every_form(tmp_path):
    assert hosts_lib.parse_list("n1:2,n2") == [("n1", 2), ("n2", None)]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# Open MPI's form and ours\nn1 slots=2\nn2:2\n\nn3\n")
    assert hosts_lib.read_file(str(hostfile), "--hostfile") == [("n1", 2), ("n2", 2),
                                                                ("n3", None)]
    for text in ("n1:0", "n1,,n2", "n 1"):
        with pytest.raises(UsageError, match="-H"):
            hosts_lib.parse_list(text, "-H")


@pytest.mark.parametrize("hosts, np_, per_node", [
    ("a:2,b:2", None, 2), ("a:2,b:2", 4, 2), ("a,b", 4, 2), ("a,b", None, 1), ("a:3", 3, 3)])
def test_np_is_every_rank_and_ranks_per_node_follow_from_the_hosts(hosts, np_, per_node):
    assert hosts_lib.ranks_per_node(hosts_lib.parse_list(hosts), np_, 1) == per_node


@pytest.mark.parametrize("hosts, np_, message", [
    ("a:2,b:1", None, "every host must run the same number of ranks"),
    ("a:2,b", None, "every host must run the same number of ranks"),
    ("a:1,b:2", 3, "every host must run the same number of ranks"),
    ("a:2,b:2", 2, "-np 2 with hosts a:2,b:2: that is 2 rank\\(s\\) on each of 2 host\\(s\\), 4"),
    ("a,b,c", 4, "-np 4 over 3 hosts"),
])
def test_uneven_host_lists_are_refused(hosts, np_, message):
    with pytest.raises(UsageError, match=message):
        hosts_lib.ranks_per_node(hosts_lib.parse_list(hosts), np_, 1)


def test_horovodrun_np_counts_every_rank_across_hosts():
    out = _run("horovodrun.sh", "--dry_run", "-np", "4", "-H", "localhost:2,127.0.0.1:2", "--",
               "--epochs=1")
    assert out.returncode == 0, out.stderr
    assert "plan: 2 node(s) x 2 rank(s) = 4" in out.stdout
    assert "command: horovodrun -np 4 -H localhost:2,127.0.0.1:2 " in out.stdout
    out = _run("horovodrun.sh", "--dry_run", "-np", "3", "-H", "localhost:2,127.0.0.1:1")
    assert out.returncode == 2 and "the same number of ranks" in out.stderr, out.stderr


@pytest.mark.parametrize("args, message", [
    (["-np"], "error: -np needs a value (see horovodrun.sh --help)"),
    (["-H", "--dry_run"], "error: -H needs a value"),
    (["--epochs=1"], "error: unknown option --epochs=1 (train_dist.py's flags go after --"),
])
def test_horovodrun_script_refuses_a_missing_value_or_an_unknown_option(args, message):
    out = _run("horovodrun.sh", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "unbound variable" not in out.stderr and not out.stdout


def test_launch_scripts_refuse_to_run_without_the_venv(tmp_path):
    out = subprocess.run([os.path.join(ROOT, "launch", "horovodrun.sh"), "--dry_run"], cwd=ROOT,
                         env=job_env(VENV=str(tmp_path)), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and f"no Python at {tmp_path}/bin/python: run tools/setup.sh" \
        in out.stderr, out.stderr


def test_horovods_ssh_options_go_to_horovodrun_and_are_checked(tmp_path):
    key = tmp_path / "cluster_key"
    key.write_text("")
    out = _run("horovodrun.sh", "--dry_run", "-np", "2", "--ssh-port", "2222",
               "--ssh-identity-file", str(key), "--", "--epochs=1")
    assert out.returncode == 0, out.stderr
    assert f"command: horovodrun -np 2 -H localhost:2 --ssh-port 2222 --ssh-identity-file " \
           f"{key} " in out.stdout
    out = _run("horovodrun.sh", "--dry_run", "-i", str(tmp_path / "missing"))
    assert out.returncode == 2 and "--ssh-identity-file=" in out.stderr and \
        "no such file" in out.stderr, out.stderr
    out = _run("mpirun.sh", "--dry_run", "--ssh_port", "2222")
    assert out.returncode == 2, out.stderr
