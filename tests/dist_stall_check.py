"""Run under horovodrun in place of train_dist.py, with its flags: the real job, except that
rank 1's training thread stops for good after step STALL_AT of epoch 1, while its process and
Horovod's background thread live on (what a deadlocked user callback or data thread looks like).
The other ranks wait in the next allreduce; only Horovod's stall check can end that.
"""

import os
import sys
import time

import resnet  # noqa: F401  (first, as train_dist.py: the job's environment before TF loads)
import tensorflow as tf

import wrapped_job

STALL_AT = 2  # 0-based batch index within epoch 1


class StallForever(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == STALL_AT:
            print(f"rank 1 stalls after step {batch + 1}", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)


wrapped_job.run(StallForever() if os.environ.get("OMPI_COMM_WORLD_RANK") == "1" else None)
