"""The network a multi-host launch uses, chosen from what each host reports (stated here; the
emulated cluster in test_cluster.py runs it across real namespaces)."""

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
    assert "not shared, so left out: eth1 (10.88.0.0/24)" in choice.why
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
