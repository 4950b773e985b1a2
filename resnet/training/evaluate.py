"""Exact test metrics over sharded data: every rank scores its shard, the counts are summed.

Accuracy, per-class accuracy and the confusion matrix come from integer counts, so they are the
same for 1, 2 or 4 ranks on the same weights; padding examples (weight 0) are left out.

With `fold` (--fold_batchnorm) the model is scored as the export serves it: every BatchNorm
folded into the convolution before it (frozen.inference), no normalisation pass. The same maths
up to float round-off; the weights it reads are folded once per evaluation, from the current ones.
"""

import contextlib
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from resnet.data import pipeline
from resnet.data import sharding
from resnet.training import frozen


def evaluate(model: tf.keras.Model, split, rank: int, world_size: int, batch_size: int,
             class_names: Sequence[str], allreduce_sum: Callable[[np.ndarray], np.ndarray],
             on_batch: Callable[[], None] = lambda: None, flip: bool = False,
             image_size: int = 0, fold: bool = False) -> dict:
    """flip: average the probabilities of each image and its left-right mirror. image_size: what
    the pipeline crops images the model does not resize itself to (pipeline.eval_dataset).
    fold: every BatchNorm folded into its convolution (the module's note)."""
    with frozen.inference(model, frozen.Folds()) if fold else contextlib.nullcontext(0) as folded:
        if folded:
            logging.info("evaluation: %d convolutions with their BatchNorm folded in", folded)
        # Traced here, inside the fold: the function reads the folded weights.
        metrics = _evaluate(model, split, rank, world_size, batch_size, class_names,
                            allreduce_sum, on_batch, flip, image_size)
    # In metrics.json: how the scores were computed (0: Keras's own layers).
    return {**metrics, "evaluation_batchnorms_folded": folded}


def _evaluate(model, split, rank, world_size, batch_size, class_names, allreduce_sum, on_batch,
              flip, image_size) -> dict:
    num_classes = len(class_names)
    shard = sharding.eval_shard(len(split), rank, world_size, batch_size)

    @tf.function
    def predict(x):
        probs = model(x, training=False)
        if flip:  # images are NHWC: axis 2 is the width
            probs = (probs + model(tf.reverse(x, axis=[2]), training=False)) / 2
        return probs

    confusion = np.zeros((num_classes, num_classes), np.float64)
    loss_sum = 0.0
    for images, labels, weights in pipeline.eval_dataset(split, shard, batch_size, num_classes,
                                                                image_size):
        probs = predict(images).numpy().astype(np.float64)
        real = weights.numpy() > 0
        truth = np.argmax(labels.numpy(), axis=1)[real]
        probs = probs[real]
        np.add.at(confusion, (truth, np.argmax(probs, axis=1)), 1)
        loss_sum += float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1)).sum())
        on_batch()
    # Horovod: sum the counts over ranks; every rank gets the totals.
    total = allreduce_sum(np.concatenate([confusion.ravel(), [loss_sum]]))
    confusion = np.rint(total[:-1]).astype(np.int64).reshape(num_classes, num_classes)
    seen = int(confusion.sum())
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": float(confusion.trace() / max(seen, 1)),
        "test_loss": float(total[-1] / max(seen, 1)),
        "test_examples": seen,
        "per_class_accuracy": {n: float(a) for n, a in zip(class_names, per_class)},
        "confusion_matrix": confusion.tolist(),
    }
