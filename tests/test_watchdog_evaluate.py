"""Pure logic that only real launchers reached before, in-process: the watchdog with its clock
and its exit injected, and the exact evaluation summed over ranks with an injected sum."""

import threading

import numpy as np
import pytest
import tensorflow as tf

from resnet.data.splits import Split
from resnet.errors import EXIT_HUNG
from resnet.training.evaluate import evaluate
from resnet.training.watchdog import Watchdog


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _watchdog(clock, exits, **kwargs):
    return Watchdog(5, rank=1, where=lambda: "epoch 1 step 3", clock=clock,
                    exit=exits.append, **kwargs)


def test_the_watchdog_fires_only_once_armed_and_idle_past_the_timeout(capsys):
    clock, exits = FakeClock(), []
    dog = _watchdog(clock, exits)
    clock.now += 3600
    dog.check()
    assert exits == []  # not armed: tracing and kernel creation may take long before step 1
    dog.beat()
    clock.now += 5
    dog.check()
    assert exits == []  # exactly the timeout: not past it
    dog.on_train_batch_end(0)  # a step beats
    clock.now += 5.5
    dog.check()
    assert exits == [EXIT_HUNG]
    err = capsys.readouterr().err
    assert "rank 1 on " in err and "no progress for 6 s (--hang_timeout=5; last: epoch 1 " \
        "step 3)" in err and "run the same command to resume" in err


def test_the_watchdog_thread_ends_the_process_through_its_exit():
    clock, exits, fired = FakeClock(), [], threading.Event()
    dog = Watchdog(5, rank=0, where=lambda: "eval", clock=clock,
                   exit=lambda code: (exits.append(code), fired.set()), poll_seconds=0.01)
    dog.beat()
    clock.now += 60
    dog.start()
    assert fired.wait(60), "the watchdog thread never called its exit"  # an event, not a sleep
    assert exits == [EXIT_HUNG]
    dog.stop()


def test_a_zero_timeout_starts_no_thread():
    before = threading.active_count()
    Watchdog(0, 0, lambda: "").start()
    assert threading.active_count() == before


def _model(num_classes):
    tf.keras.utils.set_random_seed(3)
    x = tf.keras.Input((32, 32, 3))
    y = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Rescaling(1 / 255)(x))
    return tf.keras.Model(x, tf.keras.layers.Dense(num_classes, activation="softmax")(y))


@pytest.mark.parametrize("world_size", [2, 3])
def test_evaluation_summed_over_ranks_equals_one_rank(world_size):
    """Every rank scores its shard (padding left out); the injected sum plays Horovod's
    allreduce: first each rank's own counts are caught, then every rank gets their total."""
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 4, 23).astype(np.int32))
    names, model = ["a", "b", "c", "d"], _model(4)
    one = evaluate(model, split, 0, 1, 4, names, allreduce_sum=lambda v: v)
    parts = []
    for rank in range(world_size):
        evaluate(model, split, rank, world_size, 4, names,
                 allreduce_sum=lambda v: parts.append(v) or v)
    total = np.sum(parts, axis=0)
    results = [evaluate(model, split, rank, world_size, 4, names, allreduce_sum=lambda v: total)
               for rank in range(world_size)]
    assert one["test_examples"] == 23 and sum(map(sum, one["confusion_matrix"])) == 23
    for got in results:
        for key in ("test_accuracy", "test_examples", "confusion_matrix", "per_class_accuracy"):
            assert got[key] == one[key], key
        assert got["test_loss"] == pytest.approx(one["test_loss"], rel=1e-12)


def _conv_model(num_classes):
    """A convolution and the BatchNorm after it, its statistics and scale away from 1 and 0."""
    tf.keras.utils.set_random_seed(4)
    x = tf.keras.Input((32, 32, 3))
    y = tf.keras.layers.Conv2D(8, 3, use_bias=False)(tf.keras.layers.Rescaling(1 / 255)(x))
    bn = tf.keras.layers.BatchNormalization()
    y = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.ReLU()(bn(y)))
    model = tf.keras.Model(x, tf.keras.layers.Dense(num_classes, activation="softmax")(y))
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 1, 8), rng.normal(0, 0.3, 8),
                    rng.uniform(0.01, 0.2, 8)])
    return model


def test_the_folded_evaluation_scores_as_keras_layers_do():
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 4, 23).astype(np.int32))
    names, model = ["a", "b", "c", "d"], _conv_model(4)
    keras = evaluate(model, split, 0, 1, 4, names, allreduce_sum=lambda v: v)
    folded = evaluate(model, split, 0, 1, 4, names, allreduce_sum=lambda v: v, fold=True)
    assert keras["evaluation_batchnorms_folded"] == 0
    assert folded["evaluation_batchnorms_folded"] == 1
    assert folded["confusion_matrix"] == keras["confusion_matrix"]
    assert folded["test_loss"] == pytest.approx(keras["test_loss"], rel=1e-5)
    # The model's own layers again after it (the fold lives only inside the evaluation).
    assert evaluate(model, split, 0, 1, 4, names, allreduce_sum=lambda v: v) == keras

