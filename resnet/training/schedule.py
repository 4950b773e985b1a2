"""Numbers derived from the config and the world size, and the learning-rate schedule.

Horovod: the learning rate is scaled by the number of ranks because the global batch is
batch_size * ranks (Goyal et al., "Accurate, Large Minibatch SGD"); a linear warmup from the
single-rank rate keeps the first steps of a large global batch from diverging, then a cosine decay
brings it to zero at the last step. --warmup_from=zero ramps from 0 instead, at any rank count.
"""

import dataclasses
import math

import tensorflow as tf

from resnet.data import sharding
from resnet.config import Config


def warmup_start(config: Config) -> float:
    return 0.0 if config.warmup_from == "zero" else config.learning_rate


@dataclasses.dataclass(frozen=True)
class Plan:
    config: Config
    world_size: int
    num_train: int

    @property
    def global_batch_size(self) -> int:
        return self.config.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return sharding.steps_per_epoch(self.num_train, self.config.batch_size, self.world_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def peak_learning_rate(self) -> float:
        return self.config.learning_rate * self.world_size

    @property
    def warmup_start(self) -> float:
        return warmup_start(self.config)

    @property
    def warmup_steps(self) -> int:
        return min(int(round(self.config.warmup_epochs * self.steps_per_epoch)), self.total_steps)


# Registered: Horovod's DistributedOptimizer re-creates the optimizer from its config.
@tf.keras.utils.register_keras_serializable(package="resnet")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `start` to `peak` over `warmup` steps, cosine decay to 0 at `total`.

    `offset` shifts the step so that an optimizer created for a later phase (after freezing)
    continues the same curve.
    """

    def __init__(self, start, peak, warmup, total, offset=0):
        self.start, self.peak = float(start), float(peak)
        self.warmup, self.total, self.offset = int(warmup), max(int(total), 1), int(offset)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.offset
        warm = self.start + (self.peak - self.start) * step / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        cosine = 0.5 * self.peak * (1.0 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return dict(start=self.start, peak=self.peak, warmup=self.warmup, total=self.total,
                    offset=self.offset)


def learning_rate(plan: Plan, offset: int = 0) -> WarmupCosine:
    return WarmupCosine(start=plan.warmup_start, peak=plan.peak_learning_rate,
                        warmup=plan.warmup_steps, total=plan.total_steps, offset=offset)


def learning_rate_at(config: Config, position: float, world_size: int) -> float:
    """The same warmup-cosine curve as WarmupCosine, with the position in epochs (fractional)
    instead of steps, for the rank count in force now: elastic mode sets the rate every step,
    because a step count means nothing once the number of ranks (and so the steps per epoch)
    changes mid-run."""
    peak = config.learning_rate * world_size
    start = warmup_start(config)
    warmup, total = config.warmup_epochs, float(config.epochs)
    if position < warmup:
        return start + (peak - start) * position / warmup
    progress = min(max((position - warmup) / max(total - warmup, 1e-9), 0.0), 1.0)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))
