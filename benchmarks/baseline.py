"""The baseline the harness compares against: plain single-process Keras model.fit, written the way
a user would write it, with the same model, batch and precision as train_dist.py.

  python -m benchmarks.baseline --image_size=32 --precision=fp32 --batch_size=64 --steps=15

Prints one JSON line: the seconds of every training step (the first ones included; the harness
drops the warm-up).
"""

import argparse
import json

import numpy as np
import tensorflow as tf

from benchmarks.common import StepTimer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=15)
    a = p.parse_args()
    if a.precision == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")

    inputs = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Resizing(a.image_size, a.image_size)(inputs)
    x = tf.keras.applications.resnet50.preprocess_input(x)
    base = tf.keras.applications.ResNet50(include_top=False, weights=None, pooling="avg",
                                          input_shape=(a.image_size, a.image_size, 3))
    x = base(x, training=False)
    outputs = tf.keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
    model = tf.keras.Model(inputs, outputs)
    model.compile(tf.keras.optimizers.SGD(0.001, momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])

    n = a.batch_size * a.steps
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32)
    labels = rng.integers(0, 10, n)
    timer = StepTimer()
    model.fit(images, labels, batch_size=a.batch_size, epochs=1, verbose=0, callbacks=[timer])
    print(json.dumps({"step_seconds": timer.seconds}))


if __name__ == "__main__":
    main()
