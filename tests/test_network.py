"""The network a multi-host launch uses, chosen from what each host reports (stated here; the
emulated cluster in test_cluster.py runs it across real namespaces)."""

import socket
import subprocess

import pytest

from resnet.errors import UsageError
from resnet.launch import network

NODE1 = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0@if5    inet 10.77.0.1/24 scope global eth0\\       valid_lft forever preferred_lft forever
3: eth1@if7    inet 10.88.0.1/24 scope global eth1\\       valid_lft forever preferred_lft forever
"""
NODE2 = """1: lo    inet 127.0.0.1/8 scope host lo
2: eth0@if6    inet 10.77.0.2/24 scope global eth0
"""
NODE3_OTHER_NAME = """1: lo    inet 127.0.0.1/8 scope host lo
4: ens5    inet 10.77.0.3/24 scope global ens5
"""


def hosts(**texts):
    return {h: network.parse_ip_addr(t) for h, t in texts.items()}


def test_parse_ip_addr():
    rows = network.parse_ip_addr(NODE1)
    assert [(n, str(a)) for n, a in rows] == [("lo", "127.0.0.1/8"), ("eth0", "10.77.0.1/24"),
                                              ("eth1", "10.88.0.1/24")]


def test_the_network_every_host_has_wins_and_the_others_are_named():
    choice = network.choose(hosts(node1=NODE1, node2=NODE2))
    assert choice.networks == ("10.77.0.0/24",) and choice.names == "eth0"
    assert "left out: eth1 (10.88.0.0/24): not every host has it" in choice.why
    assert network.open_mpi_args(choice) == ["--mca", "btl_tcp_if_include", "10.77.0.0/24",
                                             "--mca", "oob_tcp_if_include", "10.77.0.0/24"]
    assert network.describe(choice).startswith("network: 10.77.0.0/24 (eth0): the network")


def test_interfaces_named_differently_go_to_open_mpi_as_the_network():
    choice = network.choose(hosts(node1=NODE1, node3=NODE3_OTHER_NAME))
    assert choice.networks == ("10.77.0.0/24",) and choice.names is None
    assert "named differently on different hosts" in network.describe(choice)


def test_no_shared_network_and_a_named_interface_a_host_lacks_are_refused():
    lonely = "2: eth0    inet 192.168.5.2/24 scope global eth0\n"
    with pytest.raises(UsageError, match="share no IPv4 network.*node2: eth0 192.168.5.2/24"):
        network.choose(hosts(node1=NODE1, node2=lonely))
    with pytest.raises(UsageError, match="--network-interfaces=eth1: node2 has no eth1"):
        network.choose(hosts(node1=NODE1, node2=NODE2), "eth1")
    named = network.choose(hosts(node1=NODE1, node2=NODE2), "eth0")
    assert named.named and network.open_mpi_args(named)[2] == "eth0"


def test_an_unreachable_host_is_an_error_not_a_wait():
    def no_answer(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    def refused(cmd, **kwargs):
        if cmd[0] != "ssh":  # this machine's own interfaces, listed for real
            return subprocess.run(cmd, **kwargs)
        return subprocess.CompletedProcess(cmd, 255, "", "ssh: connect to host node9 port 22: "
                                                         "No route to host")
    with pytest.raises(UsageError, match="host node9: no answer over ssh within"):
        network.plan_network(["node9"], run=no_answer)
    with pytest.raises(UsageError, match="node9: cannot list .*No route to host"):
        network.plan_network(["localhost", "node9"], run=refused)
    assert network.plan_network(["localhost"]) is None  # one machine: nothing to choose


DOCKER0 = "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\n"


def test_a_bridge_at_the_same_address_on_every_host_is_left_out_unless_named():
    """Docker's default bridge: 172.17.0.1/16 on every host, which looks shared."""
    choice = network.choose(hosts(node1=NODE2 + DOCKER0, node2=NODE3_OTHER_NAME + DOCKER0))
    assert choice.networks == ("10.77.0.0/24",)
    assert "docker0 (172.17.0.0/16): a container or VM bridge" in choice.why
    named = network.choose(hosts(node1=NODE2 + DOCKER0, node2=NODE2 + DOCKER0), "docker0")
    assert named.named and named.interfaces == ("docker0",)  # named: the user's choice
    # Under any other name, the same address on two hosts still rules it out.
    same = DOCKER0.replace("docker0", "eth9")
    choice = network.choose(hosts(node1=NODE1 + same, node2=NODE2 + same))
    assert choice.networks == ("10.77.0.0/24",)
    assert "eth9 (172.17.0.0/16): node1 and node2 have the same address 172.17.0.1" in choice.why
    for name in ("br-0123456789ab", "virbr0", "podman0", "cni0", "flannel.1", "cali1a2b3c"):
        assert network.VIRTUAL_BRIDGE.match(name), name
    for name in ("eth0", "ens5", "ib0", "bond0", "br0", "enp3s0f1"):
        assert not network.VIRTUAL_BRIDGE.match(name), name


def test_a_network_whose_addresses_do_not_answer_is_left_out_and_named():
    both = "3: eth1    inet 10.99.0.{}/24 scope global eth1\n"
    per_host = hosts(node1=NODE2.replace("10.77.0.2", "10.77.0.1") + both.format(1),
                     node2=NODE2 + both.format(2))
    asked = []

    def reachable(ip):
        asked.append(ip)
        return "no answer within 3 s" if ip.startswith("10.99.") else None
    choice = network.choose(per_host, reachable=reachable)
    assert choice.networks == ("10.77.0.0/24",)
    # This machine is neither host: each is asked, and the first silent one rules it out.
    assert "eth1 (10.99.0.0/24): node1's 10.99.0.1 is not reachable from here: no answer" \
        in choice.why
    assert set(asked) == {"10.77.0.1", "10.77.0.2", "10.99.0.1"}
    with pytest.raises(UsageError, match="share no IPv4 network they can reach.*node1's "
                                         "10.77.0.1 is not reachable from here"):
        network.choose(per_host, reachable=lambda ip: "no route to host")


def test_the_probe_tells_an_answer_from_silence():
    with socket.socket() as server:  # a listener here: accepted
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert network.probe("127.0.0.1", server.getsockname()[1]) is None
    with socket.socket() as closed:  # a port nobody listens on: refused, still an answer
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert network.probe("127.0.0.1", port) is None


def test_remote_commands_start_as_open_mpi_starts_its_daemons():
    assert network.remote_command("node2", {}) == [
        "ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={network.SSH_TIMEOUT_S}", "node2"]
    agent = {"OMPI_MCA_plm_rsh_agent": "/opt/site/bin/cluster-ssh -p 2222 : rsh"}
    assert network.remote_command("node2", agent) == ["/opt/site/bin/cluster-ssh", "-p", "2222",
                                                      "node2"]
    wrapped = {"OMPI_MCA_plm_rsh_agent": "/tmp/cluster/bin/ssh"}
    assert network.remote_command("node2", wrapped)[:2] == ["/tmp/cluster/bin/ssh", "-o"]


def test_under_slurm_open_mpi_is_told_to_leave_this_hosts_bridges_out():
    def ip(cmd, **kwargs):  # this host as `ip -o -4 addr show` lists it
        return subprocess.CompletedProcess(cmd, 0, NODE2 + DOCKER0, "")
    env, said = network.open_mpi_env({}, run=ip)
    assert env == {"OMPI_MCA_btl_tcp_if_exclude": "127.0.0.1/8,172.17.0.0/16",
                   "OMPI_MCA_oob_tcp_if_exclude": "127.0.0.1/8,172.17.0.0/16"}
    assert "left out: docker0 (172.17.0.0/16): a container or VM bridge" in said
    env, _ = network.open_mpi_env({}, "ib0", run=ip)
    assert env["OMPI_MCA_btl_tcp_if_include"] == "ib0" and len(env) == 2
    # Your own Open MPI setting wins, and include with exclude would be an Open MPI error.
    assert network.open_mpi_env({"OMPI_MCA_btl_tcp_if_include": "eth0"}, run=ip)[0] == {}


def test_open_mpis_rsh_args_and_horovods_ssh_options_reach_every_remote_command():
    env = {"OMPI_MCA_plm_rsh_agent": "/opt/site/rsh", "OMPI_MCA_plm_rsh_args": "-p 2200 -q"}
    assert network.remote_command("node2", env, network.Ssh(2222, "/keys/k")) == [
        "/opt/site/rsh", "-p", "2200", "-q", "-p", "2222", "-i", "/keys/k", "node2"]
    # The probes go to the port sshd listens on: horovodrun's, else Open MPI's, else 22.
    assert network.ssh_port(env, network.Ssh(2222)) == 2222
    assert network.ssh_port(env) == 2200
    assert network.ssh_port({"OMPI_MCA_plm_rsh_agent": "ssh -p 2022 : rsh"}) == 2022
    assert network.ssh_port({}) == 22
    assert network.Ssh(2222, "/keys/k").horovodrun_args() == [
        "--ssh-port", "2222", "--ssh-identity-file", "/keys/k"]


def _ssh_like_agent(tmp_path):
    """An agent that runs its command here the way ssh runs it on a host: the words after the
    host joined into one string for a shell, with stdin passed on."""
    agent = tmp_path / "agent"
    agent.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    agent.chmod(0o755)
    return {"OMPI_MCA_plm_rsh_agent": str(agent)}


def test_probing_back_from_a_host_tells_an_answer_from_silence(tmp_path):
    """The script a host runs, run for real by a shell here: a listener answers, a closed
    port refuses (still an answer)."""
    with socket.socket() as server, socket.socket() as closed:
        server.bind(("127.0.0.1", 0))
        server.listen()
        closed.bind(("127.0.0.2", 0))
        for address, port in (("127.0.0.1", server.getsockname()[1]),
                              ("127.0.0.2", closed.getsockname()[1])):
            assert network.probe_back("node2", [address], port,
                                      environ=_ssh_like_agent(tmp_path)) == {address: None}

    def said(text):  # what the host's shell printed, read
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, text, "")
    silent = "10.0.0.1 124\n10.0.0.2 1 bash: connect: No route to host bash: line 1: " \
             "/dev/tcp/10.0.0.2/22: No route to host\n10.0.0.3 127 sh: 1: timeout: not found\n"
    assert network.probe_back("node2", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], run=said(silent)) \
        == {"10.0.0.1": "no answer within 3 s", "10.0.0.2": "No route to host",
            "10.0.0.3": None}


def test_a_host_that_stops_answering_before_its_probe_back_is_named():
    """Listed a moment ago, silent now (down, or its link cut): the plan stops with its name
    instead of waiting on its ssh for ever."""
    def silent(cmd, timeout, **kw):
        raise subprocess.TimeoutExpired(cmd, timeout)
    with pytest.raises(UsageError, match="host node2: no answer over ssh while probing back "
                                         "from it; check that it is up"):
        network.probe_back("node2", ["10.0.0.1"], run=silent)


def test_a_network_the_hosts_cannot_use_between_them_is_left_out():
    """A login node on two fabrics reaches every host through both, but the hosts reach one
    another through eth0 only: probed back from each host, eth1 is left out."""
    fabric = "3: eth1    inet 10.99.0.{}/24 scope global eth1\n"
    per_host = hosts(node1=NODE2.replace("10.77.0.2", "10.77.0.1") + fabric.format(1),
                     node2=NODE2 + fabric.format(2), node3=NODE3_OTHER_NAME + fabric.format(3))
    asked = []

    def back(host, addresses):
        asked.append((host, tuple(addresses)))
        return {a: "no answer within 3 s" if a.startswith("10.99.") else None for a in addresses}
    choice = network.choose(per_host, reachable=lambda ip: None, reachable_back=back)
    assert choice.networks == ("10.77.0.0/24",)
    assert "eth1 (10.99.0.0/24): node2 cannot reach node1 (10.99.0.1) through it: no answer" \
        in choice.why
    # Neither host is this machine: every other host probes the first, once, for every network.
    assert sorted(asked) == [("node2", ("10.77.0.1", "10.99.0.1")),
                             ("node3", ("10.77.0.1", "10.99.0.1"))]
