"""Run under horovodrun: one SGD step through make_optimizer on every rank, per
--gradient_compression, and rank 0 writes the weight each rank ended with.

Rank r's gradient is 1 + (2r + 1) * 2**-20: float32 holds it and the average of the ranks'
exactly; float16 (10-bit mantissa) rounds each to 1.0. So the weight after one step with rate 1
says both that the ranks' gradients were averaged and whether they crossed as float16.
"""

import json
import sys

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from resnet.training.optimizer import make_optimizer
from resnet.config import Config

hvd.init()
out = sys.argv[1]
x = np.array([[1.0 + (2 * hvd.rank() + 1) * 2.0 ** -20]], np.float32)
target = np.array([[-0.5]], np.float32)  # loss (w x + 0.5)^2 at w = 0: gradient exactly x
report = {"rank": hvd.rank()}
for compression in ("none", "fp16"):
    model = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(
        1, use_bias=False, kernel_initializer="zeros")])
    optimizer = make_optimizer(Config(gradient_compression=compression), 1.0)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, target, batch_size=1, epochs=1, verbose=0)
    report[compression] = float(model.get_weights()[0][0, 0])
gathered = hvd.allgather_object(report)
if hvd.rank() == 0:
    with open(out, "w") as f:
        json.dump(gathered, f)
