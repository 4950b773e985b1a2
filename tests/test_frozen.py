"""BatchNorm folded into the convolution before it (resnet/training/frozen.py): the same outputs
and gradients as Keras's layers, only while a training step is traced, one BatchNorm pass fewer
per folded layer (frozen ones once a phase, trained ones in the step), and nothing of it in the
model's weights."""

import numpy as np
import pytest
import tensorflow as tf

from resnet import model as model_lib
from resnet.training import frozen


def _model(train_from="conv4"):
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", train_from)
    # Statistics and scales far from the identity, so that a wrong fold shows.
    rng = np.random.default_rng(0)
    for layer in model_lib.backbone(model).layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    return model


def _ops(model, x):
    fn = tf.function(lambda v: model(v, training=True))
    return [op.type for op in fn.get_concrete_function(x).graph.get_operations()]


def _step(model, x):
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_sum(y * tf.range(10, dtype=y.dtype))
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_the_frozen_stages_pairs_and_only_them():
    model = _model("conv4")
    backbone = model_lib.backbone(model)
    found = frozen.pairs(backbone)
    # conv1 (the stem), conv2 (3 blocks x 3 + the shortcut), conv3 (4 x 3 + 1).
    assert len(found) == 1 + 10 + 13
    assert all(conv.name.split("_")[0] in ("conv1", "conv2", "conv3") for conv, _ in found)
    assert all(bn.name == conv.name[:-len("conv")] + "bn" for conv, bn in found)
    model_lib.set_trainable(model, "head")  # the whole backbone frozen: all 53
    assert len(frozen.pairs(backbone)) == 53
    model_lib.set_trainable(model, "full", "conv1")
    assert frozen.pairs(backbone) == []


def test_folded_training_computes_the_same_outputs_and_gradients():
    model = _model("conv4")
    backbone = model_lib.backbone(model)
    x = tf.random.stateless_uniform([4, 32, 32, 3], [3, 4], maxval=255)
    weights = [v.name for v in model.weights]
    before, grads_before = _step(model, x)
    batchnorms = _ops(model, x).count("FusedBatchNormV3")
    folds = frozen.Folds()
    with frozen.training(backbone, folds, trained=False) as n:
        assert n == (24, 0)
        inside, grads_inside = _step(model, x)
        # The frozen stages' normalisation is gone from a step traced inside.
        assert _ops(model, x).count("FusedBatchNormV3") == batchnorms - 24
    np.testing.assert_allclose(inside, before, rtol=1e-4, atol=1e-6)
    for a, b in zip(grads_inside, grads_before):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())
    # Outside: Keras's own layers again, the same weights, none added.
    assert not any("call" in vars(layer) for layer in backbone.layers)
    assert _ops(model, x).count("FusedBatchNormV3") == batchnorms
    assert [v.name for v in model.weights] == weights
    # Entered again (the next epoch): the same variables, refilled from the weights as they are.
    kept = dict(folds.variables)
    with frozen.training(backbone, folds):
        pass
    assert all(folds.variables[k][0] is kept[k][0] for k in kept)
    with frozen.training(backbone, folds, enabled=False) as n:
        assert n == (0, 0) and not any("call" in vars(layer) for layer in backbone.layers)


def test_trained_pairs_fold_in_the_step_with_the_same_outputs_and_gradients(monkeypatch):
    model = _model("conv4")
    backbone = model_lib.backbone(model)
    trained = frozen.pairs(backbone, "trained")
    assert len(trained) == 19 + 10  # conv4 (6 blocks x 3 + the shortcut), conv5 (3 x 3 + 1)
    assert all(conv.name.split("_")[0] in ("conv4", "conv5") for conv, _ in trained)
    assert len(frozen.pairs(backbone, "all")) == 53
    x = tf.random.stateless_uniform([4, 32, 32, 3], [3, 4], maxval=255)
    before, grads_before = _step(model, x)
    batchnorms = _ops(model, x).count("FusedBatchNormV3")
    # At 32 px every trained feature map is smaller than its kernel: nothing trained folds.
    with frozen.training(backbone, frozen.Folds(), trained=True) as n:
        assert n == (24, 29)
        assert _ops(model, x).count("FusedBatchNormV3") == batchnorms - 24
    monkeypatch.setattr(frozen, "ACTIVATIONS_PER_WEIGHT", 0.0)  # every pair folds
    with frozen.training(backbone, frozen.Folds(), trained=True) as n:
        inside, grads_inside = _step(model, x)
        assert _ops(model, x).count("FusedBatchNormV3") == batchnorms - 53 == 0
    np.testing.assert_allclose(inside, before, rtol=1e-4, atol=1e-6)
    assert len(grads_inside) == len(grads_before) == len(model.trainable_variables)
    for a, b in zip(grads_inside, grads_before):  # gamma and beta's among them
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())
    assert not any("call" in vars(layer) for layer in backbone.layers)
    # With --batchnorm=train the step normalises by the batch: nothing trained is an affine map.
    with frozen.training(backbone, frozen.Folds(),
                         trained=model_lib.batchnorm_is_affine("train")) as n:
        assert n == (24, 0)


def test_a_trained_pair_folds_where_its_feature_map_outweighs_its_kernel():
    inputs = tf.keras.Input((4, 4, 16), batch_size=4)
    # 4 x 4 x 4 = 64 values per output channel against 1 x 1 x 16 weights: folds.
    x = tf.keras.layers.BatchNormalization()(tf.keras.layers.Conv2D(8, 1)(inputs),
                                             training=False)
    # 64 against 3 x 3 x 8 = 72: BatchNorm stays.
    x = tf.keras.layers.BatchNormalization()(tf.keras.layers.Conv2D(8, 3, padding="same")(x),
                                             training=False)
    small = tf.keras.Model(inputs, x)
    data = tf.random.stateless_normal([4, 4, 4, 16], [1, 2])
    before = small(data).numpy()
    with frozen.training(small, frozen.Folds(), trained=True) as n:
        assert n == (0, 2)
        fn = tf.function(lambda v: small(v, training=True))
        ops = [op.type for op in fn.get_concrete_function(data).graph.get_operations()]
        assert ops.count("FusedBatchNormV3") == 1
        np.testing.assert_allclose(fn(data).numpy(), before, rtol=1e-5, atol=1e-5)


def test_under_mixed_bfloat16_the_folded_weights_are_bfloat16(restored_process_state,
                                                              monkeypatch):
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _model("conv4")
    backbone = model_lib.backbone(model)
    x = tf.random.stateless_uniform([2, 32, 32, 3], [5, 6], maxval=255)
    before = model(x, training=True).numpy()
    casts = _ops(model, x).count("Cast")
    folds = frozen.Folds()
    with frozen.training(backbone, folds, trained=False):
        inside = model(x, training=True).numpy()
        # The 24 frozen kernels and biases are not cast from float32 every step.
        assert _ops(model, x).count("Cast") <= casts - 48
    assert all(k.dtype == tf.bfloat16 and b.dtype == tf.bfloat16
               for k, b in folds.variables.values())
    # bfloat16 keeps 8 bits of mantissa: the fold rounds differently, not another model.
    assert np.argmax(inside, 1).tolist() == np.argmax(before, 1).tolist()
    np.testing.assert_allclose(inside, before, atol=0.05)
    # The trained pairs too: their fold is multiplied in float32 and rounded once.
    monkeypatch.setattr(frozen, "ACTIVATIONS_PER_WEIGHT", 0.0)
    with frozen.training(backbone, folds, trained=True):
        every = model(x, training=True).numpy()
    assert np.argmax(every, 1).tolist() == np.argmax(before, 1).tolist()
    np.testing.assert_allclose(every, before, atol=0.05)


def test_fold_is_the_batchnorm_of_the_convolution():
    conv = tf.keras.layers.Conv2D(4, 3, padding="same")
    bn = tf.keras.layers.BatchNormalization(epsilon=1e-3)
    x = tf.random.stateless_normal([2, 5, 5, 3], [7, 8])
    bn(conv(x), training=False)  # built
    bn.moving_mean.assign([0.1, -0.2, 0.3, 0.0])
    bn.moving_variance.assign([0.5, 2.0, 1.0, 4.0])
    bn.gamma.assign([1.5, 0.5, 1.0, 2.0])
    bn.beta.assign([0.0, 0.1, -0.1, 0.2])
    conv.bias.assign([0.3, 0.0, -0.3, 0.1])
    kernel, bias = frozen.fold(conv, bn)
    folded = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)
    np.testing.assert_allclose(folded.numpy(), bn(conv(x), training=False).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_inference_folds_every_batchnorm_and_computes_the_same_outputs(restored_process_state):
    # The training run's model as predict.py and export.py find it: stages still trainable.
    model = _model("conv4")
    backbone = model_lib.backbone(model)
    x = tf.random.stateless_uniform([4, 32, 32, 3], [9, 10], maxval=255)
    before = model(x, training=False).numpy()
    folds = frozen.Folds()
    fn = tf.function(lambda v: model(v, training=False))
    with frozen.inference(model, folds) as n:
        assert n == 53  # every convolution of ResNet50 but none of the head
        traced = fn.get_concrete_function(x)
    # Traced inside, the function keeps the fold after it: no normalisation left in it.
    assert [op.type for op in traced.graph.get_operations()].count("FusedBatchNormV3") == 0
    np.testing.assert_allclose(traced(x).numpy(), before, rtol=1e-4, atol=1e-6)
    assert not any("call" in vars(layer) for layer in backbone.layers)
    # Under mixed_bfloat16 the folded weights are the layers' compute type.
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    bf16 = _model("conv4")
    bf16.set_weights(model.get_weights())
    folds = frozen.Folds()
    with frozen.inference(bf16, folds):
        pass
    assert len(folds.variables) == 53
    assert all(k.dtype == tf.bfloat16 and b.dtype == tf.bfloat16
               for k, b in folds.variables.values())
