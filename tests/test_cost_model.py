"""The many-node cost model against hand-computed values."""

import math

import pytest

from resnet.launch import cost_model as scaling


def test_gradient_bytes():
    assert scaling.PARAMETERS == 23_608_202  # ResNet50 no-top 23,587,712 + 10-class head 20,490
    assert scaling.gradient_bytes("fp32") == 4 * scaling.PARAMETERS
    assert scaling.gradient_bytes("fp16") == 2 * scaling.PARAMETERS


def test_ring_allreduce_cost():
    nbytes = 100 * 2**20  # two fused messages
    wire = 1448 / 1538  # TCP's data in an Ethernet wire's bytes at MTU 1500
    # 2 nodes, 25 Gb/s: 2*(1)/2 * bytes / (3.125e9 * wire) + 2*1*2*5e-6
    want = nbytes / (3.125e9 * wire) + 2e-5
    assert scaling.allreduce_seconds(2, nbytes, 25) == pytest.approx(want)
    assert scaling.allreduce_seconds(1, nbytes, 25) == 0.0
    # The bandwidth term approaches 2 x bytes / bandwidth as N grows.
    big = scaling.allreduce_seconds(1000, nbytes, 100)
    assert big == pytest.approx(2 * 0.999 * nbytes / (12.5e9 * wire) + 2 * 999 * 2 * 5e-6)
    # A measured round cost and another wire efficiency (benchmarks/allreduce.py's emulation).
    emulated = scaling.allreduce_seconds(3, nbytes, 1, latency_s=0.026, wire=1448 / 1514)
    assert emulated == pytest.approx(4 / 3 * nbytes / (125e6 * 1448 / 1514) + 4 * 2 * 0.026)


def test_efficiency_falls_with_nodes_and_rises_with_bandwidth():
    e = [scaling.efficiency(n, 1.0, scaling.gradient_bytes(), 25) for n in (2, 8, 64)]
    assert e[0] > e[1] > e[2]
    assert scaling.efficiency(8, 1.0, scaling.gradient_bytes(), 100) > e[1]
    assert scaling.efficiency(8, 1.0, scaling.gradient_bytes("fp16"), 25) > e[1]
    assert "| 64 |" in scaling.table(1.0, 128)
    # The round cost adds 2 (N - 1) rounds per fused message, and nothing else.
    nbytes, fused = scaling.gradient_bytes(), math.ceil(scaling.gradient_bytes() /
                                                         scaling.FUSION_BYTES)
    for n in (2, 8):
        extra = (scaling.allreduce_seconds(n, nbytes, 1.0, latency_s=0.026) -
                 scaling.allreduce_seconds(n, nbytes, 1.0, latency_s=0.0))
        assert extra == pytest.approx(2 * (n - 1) * fused * 0.026)
