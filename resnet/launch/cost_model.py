"""A cost model for many nodes: what the 2 cores here cannot show.

  python -m resnet.launch.cost_model --step_seconds=0.8 --images_per_step=64

Per step, every node computes for `step_seconds` (measured), then the gradients are allreduced over
a ring of N nodes (Horovod's algorithm across nodes): each node sends and receives
2 (N-1)/N x bytes, in 2 (N-1) rounds per fused message, each round paying the link latency:

  t_allreduce(N) = 2 (N-1)/N x bytes / bandwidth  +  2 (N-1) x messages x latency
  efficiency(N)  = t_compute / (t_compute + t_allreduce(N))

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


def gradient_bytes(compression: str = "fp32") -> int:
    return PARAMETERS * (2 if compression in ("fp16", "bf16") else 4)


def allreduce_seconds(nodes: int, nbytes: int, gbit_per_s: float,
                      latency_s: float = LATENCY_S) -> float:
    if nodes <= 1:
        return 0.0
    bandwidth = gbit_per_s * 1e9 / 8
    messages = math.ceil(nbytes / FUSION_BYTES)
    return 2 * (nodes - 1) / nodes * nbytes / bandwidth + 2 * (nodes - 1) * messages * latency_s


def efficiency(nodes: int, step_seconds: float, nbytes: int, gbit_per_s: float) -> float:
    return step_seconds / (step_seconds + allreduce_seconds(nodes, nbytes, gbit_per_s))


def table(step_seconds: float, images_per_step: int, nodes=(2, 4, 8, 16, 32, 64),
          links=(25, 100)) -> str:
    rows = ["| nodes | " + " | ".join(f"{l} Gb/s {c}" for l in links for c in ("fp32", "fp16"))
            + " |", "| --- |" + " --- |" * (2 * len(links))]
    for n in nodes:
        cells = []
        for link in links:
            for comp in ("fp32", "fp16"):
                e = efficiency(n, step_seconds, gradient_bytes(comp), link)
                cells.append(f"{e:.2f} ({n * images_per_step / (step_seconds + allreduce_seconds(n, gradient_bytes(comp), link)):.0f} img/s)")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(prog="python -m resnet.launch.cost_model", description=__doc__.split("\n")[0])
    p.add_argument("--step_seconds", type=float, required=True,
                   help="measured compute time of one step on one node")
    p.add_argument("--images_per_step", type=int, required=True, help="per node")
    a = p.parse_args()
    print(f"gradients per step: {gradient_bytes('fp32') / 2**20:.1f} MiB fp32, "
          f"{gradient_bytes('fp16') / 2**20:.1f} MiB fp16-compressed")
    print(table(a.step_seconds, a.images_per_step))


if __name__ == "__main__":
    main()
