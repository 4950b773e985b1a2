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


def global_batch_size(config: Config, world_size: int) -> int:
    """Examples per step over all ranks."""
    return config.batch_size * world_size


def peak_learning_rate(config: Config, world_size: int) -> float:
    """--learning_rate is for one rank's batch; the peak scales with the ranks (Goyal et al.)."""
    return config.learning_rate * world_size


def warmup_cosine(x, start, peak, warmup, total, cos=math.cos, clip=None, where=None):
    """The one curve: linear from `start` to `peak` over `warmup`, then cosine to 0 at `total`,
    with `x`, `warmup` and `total` in one unit (steps, or epochs). Plain floats by default; with
    TensorFlow's cos, clip_by_value and where it is a graph op (WarmupCosine)."""
    clip = clip or (lambda v, lo, hi: min(max(v, lo), hi))
    where = where or (lambda cond, a, b: a if cond else b)
    tiny = 1e-9  # a warmup (or a decay) of length 0: never divide by it
    warm = start + (peak - start) * x / max(warmup, tiny)
    progress = clip((x - warmup) / max(total - warmup, tiny), 0.0, 1.0)
    return where(x < warmup, warm, 0.5 * peak * (1.0 + cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The run's steps and learning rate once the world size is known (fixed-size training)."""
    config: Config
    world_size: int
    num_train: int

    @property
    def global_batch_size(self) -> int:
        return global_batch_size(self.config, self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return sharding.steps_per_epoch(self.num_train, self.config.batch_size, self.world_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def peak_learning_rate(self) -> float:
        return peak_learning_rate(self.config, self.world_size)

    @property
    def warmup_start(self) -> float:
        return warmup_start(self.config)

    @property
    def warmup_steps(self) -> int:
        return min(int(round(self.config.warmup_epochs * self.steps_per_epoch)), self.total_steps)


# Registered: Horovod's DistributedOptimizer re-creates the optimizer from its config.
@tf.keras.utils.register_keras_serializable(package="resnet")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    """warmup_cosine over optimizer steps, `start` to `peak` over `warmup` steps, 0 at `total`.

    `offset` shifts the step so that an optimizer created for a later phase (after freezing)
    continues the same curve.
    """

    def __init__(self, start, peak, warmup, total, offset=0):
        self.start, self.peak = float(start), float(peak)
        self.warmup, self.total, self.offset = int(warmup), max(int(total), 1), int(offset)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.offset
        return warmup_cosine(step, self.start, self.peak, self.warmup, self.total, cos=tf.cos,
                             clip=tf.clip_by_value, where=tf.where)

    def get_config(self):
        return dict(start=self.start, peak=self.peak, warmup=self.warmup, total=self.total,
                    offset=self.offset)


def learning_rate(schedule: Schedule, offset: int = 0) -> WarmupCosine:
    return WarmupCosine(start=schedule.warmup_start, peak=schedule.peak_learning_rate,
                        warmup=schedule.warmup_steps, total=schedule.total_steps, offset=offset)


def learning_rate_at(config: Config, position: float, world_size: int) -> float:
    """The same curve with the position in epochs (fractional) instead of steps, for the rank
    count in force now: elastic mode sets the rate every step, because a step count means
    nothing once the number of ranks (and so the steps per epoch) changes mid-run."""
    return warmup_cosine(position, warmup_start(config), peak_learning_rate(config, world_size),
                         config.warmup_epochs, float(config.epochs))
