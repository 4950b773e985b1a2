"""A cost model for many nodes: what the 2 cores here cannot show.

  python -m resnet.launch.cost_model --step_seconds=0.8 --images_per_step=64

Per step, every node computes for `step_seconds` (measured), then the gradients are allreduced over
a ring of N nodes (what the launch plans ask Open MPI for across hosts, and Gloo's algorithm):
each node sends and receives 2 (N-1)/N x bytes, in 2 (N-1) rounds per fused message, each round
paying a fixed cost (the link latency on a real fabric):

  t_allreduce(N) = 2 (N-1)/N x bytes / (bandwidth x wire efficiency)
                   + 2 (N-1) x messages x round cost
  efficiency(N)  = t_compute / (t_compute + t_allreduce(N))

Held against ResNet50's allreduce measured across emulated hosts (benchmarks/allreduce.py,
BENCHMARKS.md, "Many nodes"): at 1 Gb/s the bandwidth term with TCP's wire efficiency comes
close to Open MPI's ring at 2 and 3 hosts, and one fixed round cost, the same at both host
counts, accounts for the rest. That cost is the emulation's (2 shared cores, tc tbf queues), not
a fabric's microseconds: `--round_seconds` takes a cost measured on yours.

No overlap of communication with the backward pass is assumed, so this is a floor: Horovod starts
allreducing the last layers' gradients while earlier layers still compute.
"""

import argparse
import math

# ResNet50 without its 1000-class top, plus the 10-class head. It counts the BatchNorm moving
# statistics too (0.2%, never sent): close enough for a cost model.
PARAMETERS = 25_636_712 - 2_049_000 + 20_490
FUSION_BYTES = 64 * 2**20  # HOROVOD_FUSION_THRESHOLD default: one message per 64 MiB
LATENCY_S = 5e-6  # per ring round, a typical 25-100 Gb/s Ethernet/RoCE hop
# What a TCP stream carries of an Ethernet wire at the usual 1500-byte MTU: 1448 bytes of data
# in each 1538 the wire spends (IP and TCP headers with timestamps, the Ethernet header and FCS,
# preamble and inter-frame gap). A 9000-byte MTU would carry 8948 of 9038.
WIRE_EFFICIENCY = 1448 / 1538


def gradient_bytes(compression: str = "fp32") -> int:
    return PARAMETERS * (2 if compression in ("fp16", "bf16") else 4)


def allreduce_seconds(nodes: int, nbytes: int, gbit_per_s: float,
                      latency_s: float = LATENCY_S, wire: float = WIRE_EFFICIENCY) -> float:
    """latency_s: the fixed cost of one ring round; wire: the share of the line rate that is
    data (WIRE_EFFICIENCY for TCP over Ethernet)."""
    if nodes <= 1:
        return 0.0
    bandwidth = gbit_per_s * 1e9 / 8 * wire
    messages = math.ceil(nbytes / FUSION_BYTES)
    return 2 * (nodes - 1) / nodes * nbytes / bandwidth + 2 * (nodes - 1) * messages * latency_s


def efficiency(nodes: int, step_seconds: float, nbytes: int, gbit_per_s: float,
               latency_s: float = LATENCY_S) -> float:
    return step_seconds / (step_seconds + allreduce_seconds(nodes, nbytes, gbit_per_s,
                                                            latency_s))


def table(step_seconds: float, images_per_step: int, nodes=(2, 4, 8, 16, 32, 64),
          links=(25, 100), latency_s: float = LATENCY_S) -> str:
    rows = ["| nodes | " + " | ".join(f"{l} Gb/s {c}" for l in links for c in ("fp32", "fp16"))
            + " |", "| --- |" + " --- |" * (2 * len(links))]
    for n in nodes:
        cells = []
        for link in links:
            for comp in ("fp32", "fp16"):
                t = allreduce_seconds(n, gradient_bytes(comp), link, latency_s)
                cells.append(f"{step_seconds / (step_seconds + t):.2f} "
                             f"({n * images_per_step / (step_seconds + t):.0f} img/s)")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(prog="python -m resnet.launch.cost_model", description=__doc__.split("\n")[0])
    p.add_argument("--step_seconds", type=float, required=True,
                   help="measured compute time of one step on one node")
    p.add_argument("--images_per_step", type=int, required=True, help="per node")
    p.add_argument("--round_seconds", type=float, default=LATENCY_S,
                   help="fixed cost of one ring round (default: a 25-100 Gb/s fabric's latency)")
    a = p.parse_args()
    print(f"gradients per step: {gradient_bytes('fp32') / 2**20:.1f} MiB fp32, "
          f"{gradient_bytes('fp16') / 2**20:.1f} MiB fp16-compressed")
    print(table(a.step_seconds, a.images_per_step, latency_s=a.round_seconds))


if __name__ == "__main__":
    main()
