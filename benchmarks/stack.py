"""Two checkouts of this project, each with its own .venv (e.g. the old and the new TensorFlow),
timed against each other in one interleaved run: train_dist.py at 1 rank and plain Keras (with
oneDNN on) on synthetic data, measured by each checkout's own harness (benchmarks.harness), the order
of the checkouts reversed every round so that the machine's drift falls on both.

  .venv/bin/python -m benchmarks.stack OLD_CHECKOUT NEW_CHECKOUT [--sizes=32,64] [--rounds=2]

  # the TF 2.15 checkout beside this one, set up by its own tools/setup.sh:
  git worktree add /tmp/tf215 3da17ca && /tmp/tf215/tools/setup.sh
  .venv/bin/python -m benchmarks.stack /tmp/tf215 .

  # a change to the data code: the CIFAR-10 input pipeline alone, before and after
  .venv/bin/python -m benchmarks.stack /tmp/before . --pipeline=../shared/data/cifar-10-images.tar.gz

Prints a markdown table (images/s, median of each setting's pooled windows) and writes
bench_out/stack.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

BATCH = {32: 64, 64: 32, 128: 16}  # benchmarks.harness's batch per size
STEPS = 12
MEASURE = {
    "train_dist": "b.train_dist({size}, 'fp32', {batch}, {steps})",
    "plain Keras + oneDNN": "b.plain_keras({size}, 'fp32', {batch}, {steps}, True)",
}


def _harness(checkout, expression):
    """`expression` (over `b`, the checkout's harness) evaluated by the checkout's own .venv."""
    # The harness moved from resnet/bench.py to benchmarks/harness.py; an older checkout has the
    # first.
    code = ("try:\n import benchmarks.harness as b\nexcept ImportError:\n import resnet.bench as b\n"
            f"import json; print(json.dumps({expression}))")
    out = subprocess.run([os.path.join(checkout, ".venv", "bin", "python"), "-c", code],
                         cwd=checkout, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(checkout, what, size):
    return _harness(checkout, MEASURE[what].format(size=size, batch=BATCH[size], steps=STEPS))


def input_pipeline(checkout, data):
    """The checkout's own harness.input_pipeline on the same images: {"decode", "augment"} in
    images/s (10,000 real CIFAR-10 JPEGs decoded, then 60 augmented batches of 64)."""
    return _harness(checkout, f"b.input_pipeline({data!r}, 64, 2)")


def compare_pipelines(trees, data, rounds):
    got = {}  # (tree, stage) -> images/s per round
    for r in range(rounds):
        for tree in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
            print(f"round {r + 1}: {tree} input pipeline", file=sys.stderr, flush=True)
            for stage, rate in input_pipeline(trees[tree], data).items():
                got.setdefault((tree, stage), []).append(rate)
    os.makedirs("bench_out", exist_ok=True)
    with open(os.path.join("bench_out", "stack_pipeline.json"), "w") as f:
        json.dump({f"{t}|{s}": v for (t, s), v in got.items()}, f, indent=2)
    print(f"{rounds} rounds, order alternating; median (min-max) images/s (OMP_NUM_THREADS=1)\n")
    print("| stage | old | new | new / old |")
    print("| --- | --- | --- | --- |")
    for stage in ("decode", "augment"):
        o, n = got[("old", stage)], got[("new", stage)]
        print(f"| {stage} | {statistics.median(o):.0f} ({min(o):.0f}-{max(o):.0f}) | "
              f"{statistics.median(n):.0f} ({min(n):.0f}-{max(n):.0f}) | "
              f"{statistics.median(n) / statistics.median(o):.2f} |")


def versions(checkout):
    code = ("import resnet, sys, tensorflow as tf, horovod; "
            "print(sys.version.split()[0], tf.__version__, horovod.__version__)")
    out = subprocess.run([os.path.join(checkout, ".venv", "bin", "python"), "-c", code],
                         cwd=checkout, capture_output=True, text=True, check=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return out.stdout.strip().splitlines()[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--sizes", default="32,64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pipeline", metavar="DATA",
                   help="instead: the CIFAR-10 input pipeline alone on DATA (an image tree .tar.gz)")
    a = p.parse_args()
    trees = {"old": os.path.abspath(a.old), "new": os.path.abspath(a.new)}
    if a.pipeline:
        return compare_pipelines(trees, os.path.abspath(a.pipeline), a.rounds)
    sizes = [int(s) for s in a.sizes.split(",")]
    windows = {}  # (tree, what, size) -> images/s of every window, all rounds pooled
    for r in range(a.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for size in sizes:
            for what in MEASURE:
                for tree in order:
                    print(f"round {r + 1}: {tree} {what} {size} px", file=sys.stderr, flush=True)
                    got = measure(trees[tree], what, size)
                    windows.setdefault((tree, what, size), []).extend(got.get("windows", []))
    result = {"versions": {t: versions(d) for t, d in trees.items()}, "rounds": a.rounds,
              "rates": {f"{t}|{w}|{s}": v for (t, w, s), v in windows.items()}}
    os.makedirs("bench_out", exist_ok=True)
    with open(os.path.join("bench_out", "stack.json"), "w") as f:
        json.dump(result, f, indent=2)
    med = {k: statistics.median(v) if v else float("nan") for k, v in windows.items()}
    print(f"old: Python, TF, Horovod = {result['versions']['old']}; "
          f"new: {result['versions']['new']}; {a.rounds} rounds, order alternating\n")
    print("| setting | size | old images/s | new images/s | new / old |")
    print("| --- | --- | --- | --- | --- |")
    for size in sizes:
        for what in MEASURE:
            o, n = med[("old", what, size)], med[("new", what, size)]
            print(f"| {what} | {size} px | {o:.1f} | {n:.1f} | {n / o:.2f} |")
    for size in sizes:
        for tree in trees:
            ours, plain = med[(tree, "train_dist", size)], med[(tree, "plain Keras + oneDNN", size)]
            print(f"\n{tree}, {size} px: train_dist / plain Keras + oneDNN = {ours / plain:.2f}",
                  end="")
    print()


if __name__ == "__main__":
    main()
