"""The job's SGD (resnet/training/optimizer.py): Keras's momentum update in one fused kernel per
variable. It must be Keras's SGD to the bit, and read and write Keras's checkpoints."""

import numpy as np
import pytest
import tensorflow as tf

from resnet.training import optimizer as optimizer_lib


def _train(opt, precision_policy, steps=5):
    """A conv + dense model from a fixed start, `steps` updates on fixed data; its weights."""
    tf.keras.mixed_precision.set_global_policy(precision_policy)
    try:
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.Input((6, 6, 3)), tf.keras.layers.Conv2D(4, 3),
                                     tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
        x = tf.random.stateless_normal([8, 6, 6, 3], [1, 2])
        y = tf.random.stateless_normal([8, 3], [3, 4])

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((tf.cast(model(x), tf.float32) - y) ** 2)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))

        for _ in range(steps):
            step()
        graph = step.get_concrete_function().graph.as_graph_def()  # with the functions it calls
        ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                              for n in f.node_def}
        return [w.numpy() for w in model.weights], [m.numpy() for m in opt.momentums], ops
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_the_fused_update_is_keras_sgd_to_the_bit(policy):
    rate = tf.keras.optimizers.schedules.PolynomialDecay(0.05, 10, 0.01)  # a schedule, as the job's
    keras_w, keras_m, keras_ops = _train(tf.keras.optimizers.SGD(rate, momentum=0.9), policy)
    ours_w, ours_m, ours_ops = _train(optimizer_lib.SGD(rate, momentum=0.9), policy)
    # The kernel did the update (not Keras's ops through a fallback).
    assert "ResourceApplyKerasMomentum" in ours_ops
    assert "ResourceApplyKerasMomentum" not in keras_ops
    for a, b in zip(keras_w + keras_m, ours_w + ours_m):
        np.testing.assert_array_equal(a, b)
    assert np.abs(keras_m[0]).max() > 0  # the momentum moved: the comparison is not of zeros


def test_a_keras_sgd_checkpoint_restores_into_the_job_sgd(tmp_path):
    var = tf.Variable([1.0, 2.0])
    keras_sgd = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    keras_sgd.apply_gradients([(tf.constant([0.5, -1.0]), var)])
    path = tf.train.Checkpoint(optimizer=keras_sgd, var=var).write(str(tmp_path / "ckpt"))
    restored = tf.Variable([0.0, 0.0])
    ours = optimizer_lib.SGD(0.1, momentum=0.9)
    ours.build([restored])
    tf.train.Checkpoint(optimizer=ours, var=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(ours.momentums[0].numpy(), keras_sgd.momentums[0].numpy())
    assert int(ours.iterations) == 1
