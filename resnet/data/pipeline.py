"""tf.data pipelines over one rank's shard: augmentation for training, none for testing.

Images stay uint8 32x32 here; resizing and the caffe preprocessing are inside the model, so the
pipeline is cheap and predict feeds the model exactly what training fed it. Augmentation uses
stateless random ops seeded by (seed, epoch, example), so an epoch's batches are the same however
often it is re-run: a resumed run sees exactly the data an uninterrupted one would have.
"""

import numpy as np
import tensorflow as tf

from resnet.data import sharding
from resnet.data.cifar import Split

PAD = 4  # pixels of zero padding before the random 32x32 crop (the usual CIFAR recipe)


def _augment(image, seed):
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
    return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def _examples(split: Split, shard: sharding.Shard, num_classes: int):
    images = split.images[shard.indices]  # this rank's slice only: numpy gather, ~ms
    labels = tf.one_hot(split.labels[shard.indices], num_classes)  # for label smoothing
    return images, labels, shard.weights


def train_dataset(split: Split, shard: sharding.Shard, batch_size: int, seed: int, epoch: int,
                  num_classes: int = 10, skip_steps: int = 0) -> tf.data.Dataset:
    """One epoch of (image, one-hot label, weight) batches for this rank; `skip_steps` drops the
    batches a mid-epoch checkpoint already trained on."""
    images, labels, weights = _examples(split, shard, num_classes)
    seeds = np.stack([np.full(len(shard.indices), seed * 100_003 + epoch, np.int64),
                      shard.indices * 2], axis=1)  # two seeds per example: crop and flip
    ds = tf.data.Dataset.from_tensor_slices((images, labels, weights, seeds))
    ds = ds.skip(skip_steps * batch_size)
    ds = ds.map(lambda x, y, w, s: (_augment(x, s), y, w),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, shard: sharding.Shard, batch_size: int,
                 num_classes: int = 10) -> tf.data.Dataset:
    images, labels, weights = _examples(split, shard, num_classes)
    ds = tf.data.Dataset.from_tensor_slices((images, labels, weights))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def synthetic(num_train: int, num_test: int, num_classes: int = 10, seed: int = 0):
    """Random images of CIFAR's shape, for benchmarks that must not depend on the disk."""
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     rng.integers(0, num_classes, n).astype(np.int32))
    return split(num_train), split(num_test)
