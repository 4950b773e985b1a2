"""The callbacks under a real (tiny) Keras fit, in-process on a world of one: divergence, step
timing, progress lines, step checkpoints, stop-on-signal, and which run on rank 0 alone."""

import logging as std_logging
import math

import numpy as np
import pytest
import tensorflow as tf

from resnet.errors import Diverged
from resnet.runtime import world as world_lib
from resnet.training import callbacks as cb


@pytest.fixture(scope="module", autouse=True)
def horovod():
    import horovod.tensorflow.keras as hvd
    hvd.init()  # a world of one: MetricAverageCallback's allreduce needs Horovod started


def _fit(callbacks, steps=6, rate=0.01, epochs=1):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(tf.keras.optimizers.SGD(rate), "mse")
    x = np.ones((steps * 4, 2), np.float32)
    return model, model.fit(x, np.ones((steps * 4, 1)), batch_size=4, epochs=epochs, verbose=0,
                            callbacks=callbacks)


def _world(rank):
    return world_lib.World(rank, 2, rank, 2, "h", 1, 1)


def test_a_non_finite_loss_stops_with_diverged_naming_the_step():
    with pytest.raises(Diverged, match=r"loss is (nan|inf) at epoch 3, step \d"):
        _fit([cb.StopOnNonFinite(lambda: 2)], rate=1e30)


def test_throughput_leaves_the_warm_up_steps_out():
    t = cb.Throughput(global_batch_size=4)
    _fit([t], steps=6)
    assert len(t.cold) == cb.Throughput.WARMUP_STEPS and len(t.warm) == 3
    assert t.images_per_second == pytest.approx(3 * 4 / sum(t.warm))


def test_progress_lines_every_n_steps_and_at_the_epoch_end(caplog):
    log = cb.ProgressLog(every=4, steps_per_epoch=10, epochs=2, global_batch_size=4,
                         epoch_getter=lambda: 0, skip_steps=lambda: 2)  # resumed at step 2
    with caplog.at_level(std_logging.INFO, logger="absl"):
        _fit([log], steps=8)
    steps = [r.getMessage().split()[3] for r in caplog.records if "images/s" in r.getMessage()]
    assert steps == ["4/10", "8/10", "10/10"]
    assert "epoch 1/2 step 4/10  loss" in caplog.records[0].getMessage()


def test_step_checkpoints_inside_the_epoch_only():
    saved = []
    _fit([cb.StepCheckpoint(2, saved.append, lambda: 0, steps_per_epoch=6)], steps=6)
    assert saved == [2, 4]  # not at 6: the epoch end writes its own checkpoint


def test_a_signal_stops_after_the_current_step():
    stop = cb.StopOnSignal(world_size=1)

    class Ask(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                stop.requested = "SIGUSR1"  # what the handler records
    model, history = _fit([Ask(), stop], steps=6)
    assert stop.stopped and stop.steps_done == 3


def test_chief_callbacks_run_on_rank_0_alone_after_the_metric_average():
    chief_only, everyone = cb.Throughput(4), cb.StopOnSignal(2)
    on_0 = cb.fit_callbacks(_world(0), lambda: 0, every_rank=[everyone], chief=[chief_only])
    on_1 = cb.fit_callbacks(_world(1), lambda: 0, every_rank=[everyone], chief=[chief_only])
    assert type(on_0[0]).__name__ == "MetricAverageCallback"
    assert isinstance(on_0[1], cb.StopOnNonFinite)
    assert on_0[2:] == [everyone, chief_only] and on_1[2:] == [everyone]
    first = object()
    assert cb.fit_callbacks(_world(1), lambda: 0, first=[first])[0] is first
    # The metric average over a world of one leaves the logged loss exactly as Keras had it.
    averaged = _fit(on_0[:2], steps=2)[1].history["loss"]
    assert math.isfinite(averaged[-1]) and averaged == _fit([], steps=2)[1].history["loss"]
