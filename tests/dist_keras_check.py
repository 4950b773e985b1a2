"""Run under horovodrun: Horovod's Keras layer on the installed stack (tf_keras, our patched
horovod), as the job uses it. Each rank fits a small model on data of its own, with
DistributedOptimizer and the broadcast, metric-average and warm-up callbacks (the last two read
and write through Horovod's Keras backend, which third_party/horovod/0002 fixes); rank 0 writes
what every rank ended with to the JSON file named by argv[1].
"""

import json
import sys

import resnet  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow loads)
import horovod.tensorflow.keras as hvd  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

hvd.init()
tf.keras.utils.set_random_seed(hvd.rank())  # different initial weights: the broadcast must fix it
rng = np.random.default_rng(hvd.rank())  # different data: the allreduce and average must show
x = rng.normal(size=(64, 8)).astype("float32")
y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")

model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4, activation="relu"),
                             tf.keras.layers.Dense(1, activation="sigmoid")])
opt = hvd.DistributedOptimizer(tf.keras.optimizers.SGD(0.05, momentum=0.9))
model.compile(opt, "binary_crossentropy", metrics=["accuracy"])
history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
    hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    hvd.callbacks.MetricAverageCallback(),
    # momentum_correction sets a float where the new (TF 2.11+) optimizers keep a tensor; the job
    # uses its own schedule, so that unfixed path is left out.
    hvd.callbacks.LearningRateWarmupCallback(initial_lr=0.05, warmup_epochs=1, steps_per_epoch=4,
                                             momentum_correction=False),
])
report = {"rank": hvd.rank(), "size": hvd.size(), "tf": tf.__version__,
          "keras": tf.keras.__name__, "python": "%d.%d" % sys.version_info[:2],
          "weights": [w.tolist() for w in model.get_weights()],
          "optimizer": [np.asarray(v).tolist() for v in opt.variables],
          "loss": [float(v) for v in history.history["loss"]],
          "local_loss": float(model.evaluate(x, y, verbose=0)[0])}
import horovod.tensorflow as hvd_tf  # noqa: E402

gathered = hvd_tf.allgather_object(report)
if hvd.rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(gathered, f)
