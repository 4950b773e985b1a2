"""ResNet50 fine-tuning across Horovod ranks on CPUs (train_dist.py is the entry point).

Importing the package sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads, for every entry point
(train_dist.py, predict.py, export.py, the benchmarks, the tests): tf.keras is then tf_keras (Keras 2).
From TensorFlow 2.16 tf.keras is Keras 3, which Horovod's Keras layer (DistributedOptimizer, its
callbacks, elastic state) does not support (horovod#4290). Forced, not defaulted: under Keras 3
the job cannot run at all.

It also applies the rank defaults every process of the job needs before TensorFlow and MPI load
(resnet/runtime/env.py: oneDNN on, Open MPI yielding while it waits), unless the user set them.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
from resnet.runtime import env as _env  # noqa: E402  (no TensorFlow in it)

_env.set_defaults(os.environ)
# TensorFlow binds tf.keras on its first use; if that already happened, it may be Keras 3.
if ("tensorflow" in sys.modules
        and not sys.modules["tensorflow"].keras.__name__.startswith("tf_keras")):
    raise ImportError("tf.keras was already used as Keras 3: import resnet before using tf.keras, "
                      "or set TF_USE_LEGACY_KERAS=1 before starting Python")
