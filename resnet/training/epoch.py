"""The end of an epoch, the same in both training loops: evaluate over every rank's shard of the
test set, record the epoch in the history, log it, and (rank 0) write the checkpoint."""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from resnet.config import Config
from resnet.training import checkpoints, evaluate


def evaluate_test(model, test, world, config: Config, class_names,
                  on_batch: Callable[[], None] = lambda: None, image_size: int = 0) -> dict:
    """image_size: the size the model was trained at (default --image_size)."""
    import horovod.tensorflow.keras as hvd

    def allreduce_sum(values: np.ndarray) -> np.ndarray:
        return hvd.allreduce(tf.constant(values, tf.float64), op=hvd.Sum,
                             name="eval_counts").numpy()
    return evaluate.evaluate(model, test, world.rank, world.size, config.batch_size, class_names,
                             allreduce_sum, on_batch, flip=config.test_time_flip,
                             image_size=image_size or config.image_size,
                             fold=config.fold_batchnorm)


def finish(model, test, world, config: Config, class_names, history: list, epoch: int,
           phase: str, train_logs: dict, on_batch: Callable[[], None] = lambda: None,
           **extra) -> dict:
    """Evaluate after epoch `epoch` (0-based), append its record to `history`, log it; returns
    the test metrics. `extra` goes into the record (the elastic loop's world_size)."""
    test_metrics = evaluate_test(model, test, world, config, class_names, on_batch)
    record = {"epoch": epoch + 1, "phase": phase, **extra,
              "train_loss": _float(train_logs.get("loss")),
              "train_accuracy": _float(train_logs.get("accuracy")),
              "test_loss": test_metrics["test_loss"],
              "test_accuracy": test_metrics["test_accuracy"]}
    history.append(record)
    logging.info("epoch %d/%d done on %d rank(s): train loss %s accuracy %s, test loss %.4f "
                 "accuracy %.4f", epoch + 1, config.epochs, world.size,
                 _fmt(record["train_loss"]), _fmt(record["train_accuracy"]),
                 record["test_loss"], record["test_accuracy"])
    return test_metrics


def save_checkpoint(config: Config, world, trackables: dict, *, epoch: int, step: int,
                    phase: str, history: list, examples_done: int = 0,
                    conv_forms: Optional[dict] = None) -> None:
    """Rank 0 writes the checkpoint (`epoch` epochs done and `step` steps, `examples_done`
    examples, of the next); the others hold the same weights and write nothing."""
    if not world.is_chief:
        return
    state = checkpoints.State(epoch=epoch, step=step, phase=phase, config=config.to_dict(),
                              history=history, examples_done=examples_done,
                              conv_forms=conv_forms or {})
    checkpoints.save(config.model_dir, trackables, state, config.keep_checkpoints)


def _float(value):
    return None if value is None else float(value)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
