"""What the benchmarks share: the step timer, the job's thread set-up, and train_dist.py's
command line on synthetic data, written as a user would type it from the checkout."""

import os
import sys
import time

import resnet  # noqa: F401  (before TensorFlow: tf.keras is Keras 2, as in the job)
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StepTimer(tf.keras.callbacks.Callback):
    """The seconds of every training step."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.t)


def use_job_threads() -> tuple:
    """This process's TensorFlow pools as train_dist.py sets them (resnet.runtime.threads)."""
    from resnet.runtime import threads
    intra, inter = threads.thread_counts()
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return intra, inter


def train_dist_args(image_size: int, precision: str, batch: int, steps: int, model_dir: str,
                    ranks: int = 1, extra=()) -> list:
    """train_dist.py's flags for `steps` steps on synthetic data with every stage training (as
    the plain Keras baseline does), no warmup and a fixed precision: the job's compute, nothing
    of its defaults' recipe."""
    return ["--dataset=synthetic", f"--max_train_examples={batch * ranks * steps}",
            f"--max_test_examples={batch * ranks}", "--epochs=1", "--weights=none",
            f"--image_size={image_size}", f"--precision={precision}", "--train_from=conv1",
            f"--batch_size={batch}", f"--model_dir={model_dir}", "--log_every_steps=1000",
            "--warmup_epochs=0", *extra]


def shown(cmd) -> str:
    """`cmd` as it reads from the checkout: this interpreter as .venv/bin/python (or python),
    never a path of the machine it ran on."""
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) \
        else "python"
    return " ".join(python if part == sys.executable else part for part in cmd)
