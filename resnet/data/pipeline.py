"""tf.data pipelines over one rank's shard: augmentation for training, none for testing.

Small images held in memory (CIFAR's 32x32) stay at their size here: resizing and the caffe
preprocessing are inside the model, so the pipeline is cheap and predict feeds the model exactly
what training fed it. Everything else (larger images in memory, and every streamed image) is
cropped to --image_size here: a random resized crop for training, the centre for testing
(images.py), and the model takes that size as it is. Streamed images are read from their files
(or their TFRecord byte range) and decoded in parallel maps; a rank reads only its shard.

Augmentation uses stateless random ops seeded by (seed, epoch, example), so an epoch's batches
are the same however often it is re-run: a resumed run sees exactly the data an uninterrupted one
would have.
"""

import os

import numpy as np
import tensorflow as tf

from resnet.data import images, sharding
from resnet.data.tfrecords import ENCODED
from resnet.data.splits import SMALL_IMAGE, Split, StreamSplit

PAD = 4  # pixels of zero padding before the random 32x32 crop (the usual CIFAR recipe)


def _pad_crop_flip(image, seed):
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
    return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def _train_image(image, seed, size: int):
    """Any decoded image to size x size: small ones padded-and-cropped at their own size then
    resized (what the model does to CIFAR), large ones by a random resized crop."""
    small = tf.reduce_max(tf.shape(image)[:2]) <= SMALL_IMAGE
    return tf.cond(small,
                   lambda: tf.image.resize(tf.cast(_pad_crop_flip(image, seed), tf.float32),
                                           (size, size)),
                   lambda: images.train_crop(image, size, seed))


def _test_image(image, size: int):
    return images.test_image(image, size, SMALL_IMAGE)


def _read_record(path, offset, length):
    with open(path.numpy(), "rb") as f:
        return os.pread(f.fileno(), int(length), int(offset))


def _encoded(split: StreamSplit, idx: np.ndarray) -> tf.data.Dataset:
    """The encoded image bytes of split[idx], in order, read as the dataset is iterated."""
    if not split.records:
        ds = tf.data.Dataset.from_tensor_slices(_utf8(split.paths[idx]))
        return ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = tf.data.Dataset.from_tensor_slices((_utf8(split.paths[idx]), split.offsets[idx],
                                             split.lengths[idx]))
    return ds.map(record_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def record_image(path, offset, length):
    """The encoded image of the tf.train.Example at `offset` (`length` bytes) of a TFRecord
    file, read by position (a graph op, for tf.data)."""
    record = tf.py_function(_read_record, [path, offset, length], tf.string)
    record.set_shape([])
    return tf.io.parse_single_example(
        record, {ENCODED: tf.io.FixedLenFeature([], tf.string)})[ENCODED]


def _utf8(paths: np.ndarray) -> np.ndarray:
    """Paths as UTF-8 bytes (a byte per ASCII character; numpy's str takes four)."""
    return np.char.encode(paths.astype(str), "utf-8")


def _seeds(shard: sharding.Shard, seed: int, epoch: int) -> np.ndarray:
    return np.stack([np.full(len(shard.indices), seed * 100_003 + epoch, np.int64),
                     shard.indices * 2], axis=1)  # two seeds per example: crop and flip


def _batched(ds, batch_size: int):
    return without_autotune_model(ds.batch(batch_size, drop_remainder=True)
                                  .prefetch(tf.data.AUTOTUNE))


def without_autotune_model(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` without tf.data's autotuning model. An iterator's destructor waits for the model's
    thread, and on TensorFlow 2.21 under Keras's fit that thread was seen waiting out its
    optimisation period (gdb: the main thread in ~RootDataset::Iterator, the tf_data_model
    thread in OptimizeLoop's timed wait): seconds to most of a minute between an epoch's last
    step and its evaluation, at random. The input is a small share of a step, and without the model
    AUTOTUNE's parallelism is this machine's core count and prefetch tunes its own buffer."""
    o = tf.data.Options()
    o.autotune.enabled = False
    return ds.with_options(o)


def train_dataset(split, shard: sharding.Shard, batch_size: int, seed: int, epoch: int,
                  num_classes: int = 10, skip_steps: int = 0,
                  image_size: int = 0) -> tf.data.Dataset:
    """One epoch of (image, one-hot label, weight) batches for this rank; `skip_steps` drops the
    batches a mid-epoch checkpoint already trained on. `image_size`: the side the pipeline crops
    to, for images it does not leave to the model (DataSet.input_size)."""
    start = skip_steps * batch_size
    idx, weights = shard.indices[start:], shard.weights[start:]
    seeds = _seeds(shard, seed, epoch)[start:]
    # Labels go in as integers and become one-hot (for label smoothing) per example: a dense
    # one-hot table of a large set's labels would cost N x classes floats up front.
    meta = (split.labels[idx], weights, seeds)
    if _small_in_memory(split):
        ds = tf.data.Dataset.from_tensor_slices((split.images[idx],) + meta)
        ds = ds.map(lambda x, y, w, s: (_pad_crop_flip(x, s), tf.one_hot(y, num_classes), w),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _batched(ds, batch_size)
    ds = tf.data.Dataset.zip((_pictures(split, idx), tf.data.Dataset.from_tensor_slices(meta)))
    ds = ds.map(lambda x, m: (_train_image(x, m[2], image_size), tf.one_hot(m[0], num_classes),
                              m[1]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _batched(ds, batch_size)


def eval_dataset(split, shard: sharding.Shard, batch_size: int, num_classes: int = 10,
                 image_size: int = 0) -> tf.data.Dataset:
    meta = (split.labels[shard.indices], shard.weights)
    if _small_in_memory(split):
        ds = tf.data.Dataset.from_tensor_slices((split.images[shard.indices],) + meta)
        ds = ds.map(lambda x, y, w: (x, tf.one_hot(y, num_classes), w))
        return _batched(ds, batch_size)
    ds = tf.data.Dataset.zip((_pictures(split, shard.indices),
                              tf.data.Dataset.from_tensor_slices(meta)))
    ds = ds.map(lambda x, m: (_test_image(x, image_size), tf.one_hot(m[0], num_classes), m[1]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _batched(ds, batch_size)


def _small_in_memory(split) -> bool:
    return isinstance(split, Split) and split.images.shape[1] <= SMALL_IMAGE


def _pictures(split, idx: np.ndarray) -> tf.data.Dataset:
    """The uint8 images split[idx], in order: from memory, or read and decoded in parallel."""
    if isinstance(split, Split):
        return tf.data.Dataset.from_tensor_slices(split.images[idx])
    return _encoded(split, idx).map(images.tf_decode, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)


def synthetic(num_train: int, num_test: int, num_classes: int = 10, seed: int = 0):
    """Random images of CIFAR's shape, for benchmarks that must not depend on the disk."""
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     rng.integers(0, num_classes, n).astype(np.int32))
    return split(num_train), split(num_test)
