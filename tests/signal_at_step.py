"""Run in place of train_dist.py, with its flags: the real job, except that after step
SIGNAL_AFTER_STEP (1-based) of the first epoch the process sends itself SIGUSR1, Slurm's
time-limit warning. The signal then lands at a known step of the epoch, not at whatever step
the job had reached when a test's own clock fired, so a short epoch cannot end first.
"""

import os
import signal
import sys

import resnet  # noqa: F401  (first, as train_dist.py: the job's environment before TF loads)
import tensorflow as tf

import wrapped_job

AFTER = int(os.environ.get("SIGNAL_AFTER_STEP", "1"))


class SignalOnce(tf.keras.callbacks.Callback):
    sent = False

    def on_train_batch_end(self, batch, logs=None):
        if not SignalOnce.sent and batch + 1 == AFTER:
            SignalOnce.sent = True
            print(f"sending SIGUSR1 after step {AFTER}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)


wrapped_job.run(SignalOnce())
