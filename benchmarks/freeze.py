"""What --train_from buys: training images/s with the first ResNet50 stages frozen.

  .venv/bin/python -m benchmarks.freeze    # 96 px, batch 64: over 13 minutes on 2 cores
  .venv/bin/python -m benchmarks.freeze --image_size=128 --batch_size=32
  .venv/bin/python -m benchmarks.freeze --image_size=96,112,128 --stages=conv4   # sizes
  .venv/bin/python -m benchmarks.freeze --stages=conv4 --precision=fp32,bf16     # precisions

One process builds one model per setting, an image size, a --train_from stage and a precision
(resnet.model, set_trainable as train_dist.py does, oneDNN on, the rank's threads as
train_dist.py sets them),
on synthetic data, then runs --steps steps of each in turn, --rounds times: the settings
alternate, so a slow spell of this shared machine hits them alike. Every step is timed alone
(bench_baseline.StepTimer, as bench_gap does). Prints images/s, median (min-max) over the steps,
and each against the first setting (conv1, everything training, at the first size, in the first
precision, by default); writes bench_out/freeze.json.
"""

import argparse
import json
import os
import statistics

import resnet  # noqa: F401  (first: the job's environment before TensorFlow loads)
import numpy as np
import tensorflow as tf

from resnet import model as model_lib
from benchmarks.common import ROOT, StepTimer, use_job_threads
from resnet.config import MIN_IMAGE_SIZE, STAGES

PRECISIONS = ("fp32", "bf16")  # what one run is timed in (train_dist.py's 'auto' picks one)


def _ints(text: str) -> list:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes as 96 or 96,112,128") from None
    if any(v < MIN_IMAGE_SIZE for v in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: ResNet50 needs at least "
                                         f"{MIN_IMAGE_SIZE} pixels")
    return sizes


def _one_of(choices, what: str):
    """An argparse type: comma-separated values, each one of `choices`."""
    def parse(text: str) -> list:
        values = text.split(",")
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: not a {what}; "
                                             f"choose from {', '.join(choices)}")
        return values
    return parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image_size", type=_ints, default=[96], help="one or more, comma-separated")
    p.add_argument("--stages", type=_one_of(STAGES, "stage"), default=list(STAGES),
                   help="--train_from values to time, comma-separated")
    p.add_argument("--precision", type=_one_of(PRECISIONS, "precision"), default=["fp32"],
                   help="fp32, bf16 or both (fp32,bf16), as train_dist.py's --precision")
    p.add_argument("--batch_size", type=int, default=64)
    # On this machine many whole-fit windows ended after 5.2, 10.3 or 20.5 s whatever the setting
    # (2026-11-27: 20 of 45 four-step windows), so steps are timed one by one and the median
    # taken over all of a setting's steps.
    p.add_argument("--steps", type=int, default=12, help="steps per setting per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "freeze.json"))
    a = p.parse_args()
    intra, inter = use_job_threads()

    n = a.batch_size * a.steps
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = tf.one_hot(rng.integers(0, 10, n), 10).numpy()
    models = {}
    for size in a.image_size:
        for stage in a.stages:
            for precision in a.precision:
                model_lib.set_precision(precision)  # the policy of the layers built next
                m = model_lib.build(10, size, "none", 0)
                model_lib.set_trainable(m, "full", stage)
                m.compile(tf.keras.optimizers.SGD(0.001, momentum=0.9),
                          tf.keras.losses.CategoricalCrossentropy())
                m.fit(images, labels, batch_size=a.batch_size, verbose=0)  # trace and warm up
                models[f"{size}/{stage}/{precision}"] = m
    rates = {key: [] for key in models}
    for _ in range(a.rounds):
        for key, m in models.items():
            timer = StepTimer()
            m.fit(images, labels, batch_size=a.batch_size, verbose=0, callbacks=[timer])
            rates[key] += [a.batch_size / s for s in timer.seconds]

    base = statistics.median(next(iter(rates.values())))
    print(f"batch {a.batch_size}, {intra} intra-op threads, "
          f"median of {a.rounds} x {a.steps} steps, each timed alone")
    print("| image size | --train_from | precision | trainable variables | images/s "
          "| vs the first row |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, r in rates.items():
        med = statistics.median(r)
        size, stage, precision = key.split("/")
        print(f"| {size} | {stage} | {precision} | {len(models[key].trainable_variables)} "
              f"| {med:.1f} ({min(r):.1f}-{max(r):.1f}) | {med / base:.2f} |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"image_sizes": a.image_size, "stages": a.stages, "precisions": a.precision,
                   "batch_size": a.batch_size,
                   "steps": a.steps,
                   "intra_op_threads": intra, "inter_op_threads": inter,
                   "images_per_second": rates}, f, indent=1)


if __name__ == "__main__":
    main()
