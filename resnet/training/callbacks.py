"""Keras callbacks: progress lines, throughput, divergence, mid-epoch checkpoints, signals.

fit_callbacks() assembles them for both training loops and decides what only rank 0 runs.
"""

import math
import os
import time
from typing import Callable, List, Optional, Sequence

import tensorflow as tf
from absl import logging

from resnet.errors import Diverged


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Stop at the first non-finite loss, before a checkpoint can save the damage. Every rank
    checks its own (allreduced, hence identical) weights, so all stop at the same step."""

    def __init__(self, epoch_getter: Callable[[], int]):
        super().__init__()
        self._epoch = epoch_getter

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise Diverged(f"loss is {loss} at epoch {self._epoch() + 1}, step {batch + 1}")


class Throughput(tf.keras.callbacks.Callback):
    """Training images/s over all ranks. The first steps of each fit (tracing, oneDNN primitive
    creation) are left out when there are enough others. Steps are in lock-step across ranks
    (allreduce), so rank 0's clock measures the job."""

    WARMUP_STEPS = 3

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.warm, self.cold = [], []  # step seconds after and during each fit's warm-up
        self._seen = 0
        self._t = 0.0

    def on_train_begin(self, logs=None):
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        (self.warm if self._seen > self.WARMUP_STEPS else self.cold).append(
            time.perf_counter() - self._t)

    @property
    def images_per_second(self) -> Optional[float]:
        steps = self.warm or self.cold
        return len(steps) * self.global_batch_size / sum(steps) if steps else None


class ProgressLog(tf.keras.callbacks.Callback):
    """One line every N steps: readable in a Slurm log, unlike a progress bar."""

    def __init__(self, every: int, steps_per_epoch: int, epochs: int, global_batch_size: int,
                 epoch_getter: Callable[[], int], skip_steps: Callable[[], int]):
        super().__init__()
        self.every, self.steps_per_epoch, self.epochs = every, steps_per_epoch, epochs
        self.global_batch_size = global_batch_size
        self._epoch, self._skip = epoch_getter, skip_steps
        self._t = time.perf_counter()
        self._since = 0

    def on_train_begin(self, logs=None):
        self._t, self._since = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._since += 1
        step = batch + 1 + self._skip()
        if step % self.every and step != self.steps_per_epoch:
            return
        now = time.perf_counter()
        rate = self._since * self.global_batch_size / max(now - self._t, 1e-9)
        self._t, self._since = now, 0
        lr = self.model.optimizer.learning_rate
        if callable(lr):
            lr = lr(self.model.optimizer.iterations)
        logging.info("epoch %d/%d step %d/%d  loss %.4f  accuracy %.4f  lr %.5f  %.1f images/s",
                     self._epoch() + 1, self.epochs, step, self.steps_per_epoch,
                     logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                     float(lr), rate)


class StepCheckpoint(tf.keras.callbacks.Callback):
    """Checkpoint every N steps inside an epoch (for long epochs on pre-emptible nodes)."""

    def __init__(self, every: int, save: Callable[[int], None], skip_steps: Callable[[], int],
                 steps_per_epoch: int):
        super().__init__()
        self.every, self._save, self._skip = every, save, skip_steps
        self.steps_per_epoch = steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1 + self._skip()
        if step % self.every == 0 and step < self.steps_per_epoch:
            self._save(step)


def tensorboard(model_dir: str) -> tf.keras.callbacks.Callback:
    return tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), profile_batch=0)


def fit_callbacks(world, epoch: Callable[[], int], every_rank: Sequence = (),
                  chief: Sequence = (), first: Sequence = ()) -> List:
    """The callbacks of one fit, for both training loops, in the order that matters: `first`,
    then Horovod's metric average (before anything reads the epoch's metrics), the divergence
    check, `every_rank`, and on rank 0 alone `chief` (logging, TensorBoard, timing, step
    checkpoints: the one place that decides what only rank 0 does during fit)."""
    import horovod.tensorflow.keras as hvd
    return [*first,
            # Horovod: average the epoch's metrics over ranks, before anything logs them.
            hvd.callbacks.MetricAverageCallback(),
            StopOnNonFinite(epoch),
            *every_rank] + (list(chief) if world.is_chief else [])


class StopOnSignal(tf.keras.callbacks.Callback):
    """SIGTERM or SIGUSR1 (Slurm's pre-emption and time-limit warnings) ask for a stop; the
    current step finishes and every rank stops after the same step.

    Signals reach ranks at slightly different moments, so a rank that stopped alone would leave
    the others waiting in the next allreduce forever. Each step therefore allreduces the flag (one
    float, microseconds against a step of a second) and all ranks stop when any rank was asked.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, world_size: int):
        super().__init__()
        self.world_size = world_size
        self.requested = None  # the signal's name, once one arrived here
        self.stopped = False
        self.steps_done = 0

    def install(self) -> "StopOnSignal":
        import signal
        for name in self.SIGNALS:
            signal.signal(getattr(signal, name), self._handle)
        return self

    def _handle(self, signum, frame):
        import signal
        self.requested = signal.Signals(signum).name

    def on_train_begin(self, logs=None):
        self.steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1
        flag = 1.0 if self.requested else 0.0
        if self.world_size > 1:
            import horovod.tensorflow as hvd
            flag = float(hvd.allreduce(tf.constant(flag), op=hvd.Max, name="stop_flag"))
        if flag > 0:
            self.stopped = True
            self.model.stop_training = True
