"""This machine's compute ceiling, and the FLOPs a model needs: what `% of ceiling` divides by.

  .venv/bin/python -m benchmarks.ceiling                 # fp32 and bf16, GFLOP/s, as JSON
  .venv/bin/python -m benchmarks.ceiling --sizes=32,96   # and ResNet50's FLOPs per image
  .venv/bin/python -m benchmarks.ceiling --sizes=96 --train_from=conv4,conv1  # and a step's

The ceiling is TensorFlow's own kernels at their best on this machine, through oneDNN as the job
runs them: a 2048 x 2048 matmul and a 3x3 convolution (batch 32, 28x28x128 to 128, a ResNet50
conv3 layer) in GFLOP/s. A training step computes the whole forward pass and the trained layers'
input and weight gradients, each as many FLOPs as their forward (train_flops): nearly 3x the
forward pass when every stage trains, less with stages frozen.
"""

import argparse
import json
import sys
import time

import resnet  # noqa: F401  (first: the job's environment before TensorFlow loads)
import tensorflow as tf

from benchmarks.common import use_job_threads
from resnet.config import STAGES


def _rate(fn, flops: float, repeats: int) -> float:
    fn()  # warm: kernel creation
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def ceiling(precision: str, repeats: int = 10) -> dict:
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    a = tf.random.normal((2048, 2048), dtype=tf.float32)
    a = tf.cast(a, dtype)
    x = tf.cast(tf.random.normal((32, 28, 28, 128)), dtype)
    k = tf.cast(tf.random.normal((3, 3, 128, 128)), dtype)
    matmul = tf.function(lambda: tf.linalg.matmul(a, a))
    conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    return {"matmul_gflops": _rate(lambda: matmul().numpy(), 2 * 2048 ** 3, repeats),
            "conv_gflops": _rate(lambda: conv().numpy(), 2 * 32 * 28 * 28 * 128 * 128 * 9,
                                 repeats)}


def forward_flops(model, side: int) -> float:
    """Floating-point operations of one image's forward pass, counted by TensorFlow's profiler
    on the frozen graph."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, side, side, 3], tf.float32))
    graph = convert_variables_to_constants_v2(fn).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def model_at(image_size: int) -> tf.keras.Model:
    """The job's model (resnet.model) at `image_size`, untrained: what the counts below read."""
    from resnet import model as model_lib
    return model_lib.build(10, image_size, "none", 0)


def resnet_forward_flops(image_size: int, model=None) -> float:
    """One image's forward FLOPs through the job's model at `image_size` (`model`: that model,
    when it is already built)."""
    return forward_flops(model or model_at(image_size), 32)


def trained_forward_flops(model, train_from: str) -> float:
    """One image's forward FLOPs in the layers of `model` (model_at) that train from stage
    `train_from` on (their
    convolutions and the head, 2 per multiply-add, from the layers' shapes): the backward pass
    computes twice this, a data and a weight gradient (the first trained layers' data gradients,
    which nothing reads, are counted too: about 1% at conv4)."""
    from resnet import model as model_lib
    model_lib.set_trainable(model, "full", train_from)
    total = 0
    for layer in model_lib.backbone(model).layers + [model.get_layer("logits")]:
        if not layer.trainable:
            continue
        if isinstance(layer, tf.keras.layers.Conv2D):
            rows, cols, channels, filters = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * rows * cols * channels * filters
        elif isinstance(layer, tf.keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return float(total)


def train_flops(forward: float, model, train_from: str) -> float:
    """One image's FLOPs in a training step of `model`, given its `forward` FLOPs: the forward
    pass and the trained layers' two gradients (nearly 3x the forward when every stage trains)."""
    return forward + 2 * trained_forward_flops(model, train_from)


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.ceiling",
                                description=__doc__.split("\n")[0])
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--sizes", default="", help="image sizes whose forward FLOPs to count")
    p.add_argument("--train_from", default="",
                   help="stages, comma-separated: and a training step's FLOPs per image with the "
                        "stages before each frozen")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",") if s]
    stages = [s for s in a.train_from.split(",") if s]
    if [s for s in stages if s not in STAGES]:
        p.error(f"--train_from={a.train_from}: use some of {', '.join(STAGES)}")
    use_job_threads()
    out = {"ceiling": {pr: ceiling(pr) for pr in a.precisions.split(",")},
           "forward_flops": {}, "train_flops": {stage: {} for stage in stages}}
    for size in sizes:  # one model per size: each stage's count only reads its layers' shapes
        model = model_at(size)
        out["forward_flops"][size] = forward = resnet_forward_flops(size, model)
        for stage in stages:
            out["train_flops"][stage][size] = train_flops(forward, model, stage)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
