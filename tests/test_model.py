"""The model: built-in layers only, caffe preprocessing, weights that do not fit are refused."""

import h5py
import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED_WEIGHTS
from resnet import kernels, model
from resnet.runtime import topology
from resnet.errors import UsageError


def test_preprocessing_matches_keras_preprocess_input():
    m = model.build(10, 32, "none", 0)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    pre = m.get_layer("caffe_preprocess")(x).numpy()
    np.testing.assert_allclose(pre, tf.keras.applications.resnet50.preprocess_input(x.copy()),
                               atol=1e-4)
    assert not m.get_layer("caffe_preprocess").trainable_weights


def test_bf16_keeps_probabilities_float32():
    model.set_precision("bf16")
    try:
        m = model.build(10, 32, "none", 0)
        assert m.get_layer("logits").compute_dtype == "bfloat16"
        assert m(np.zeros((1, 32, 32, 3), np.float32)).dtype == tf.float32
    finally:
        model.set_precision("fp32")


def _cpuinfo(tmp_path, flags):
    # Two logical CPUs, as /proc/cpuinfo lists them (the fields that matter here).
    text = "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
                   f"flags\t\t: {flags}\n\n" for i in range(2))
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def _warning(path):
    return model.bf16_warning(topology.cpu_flags(path))


def test_bf16_warns_only_on_cpus_without_bfloat16_arithmetic(tmp_path):
    avx2 = _cpuinfo(tmp_path, "fpu sse sse2 avx avx2 fma avx512f_not_a_flag")
    assert "without AMX or AVX512-BF16" in _warning(avx2)
    assert _warning(_cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16 fma")) is None
    assert _warning(_cpuinfo(tmp_path, "fpu avx2 amx_bf16 amx_tile")) is None
    assert _warning(str(tmp_path / "absent")) is None  # unknown: no guess


def test_each_bf16_mode_warns_on_a_cpu_without_bfloat16_arithmetic(tmp_path):
    avx2 = topology.cpu_flags(_cpuinfo(tmp_path, "fpu sse sse2 avx avx2 fma"))
    amx = topology.cpu_flags(_cpuinfo(tmp_path, "fpu avx2 amx_bf16 amx_tile"))
    assert "emulates bfloat16" in model.bf16_warning(avx2, "bf16_amp")
    assert "trains in float32" in model.bf16_warning(avx2, "bf16_fpmath")
    assert model.bf16_warning(avx2, "fp32") is None
    assert all(model.bf16_warning(amx, p) is None for p in model.BF16_MODES)


def test_each_precision_sets_one_way_of_computing(monkeypatch, restored_process_state):
    """The policy, the graph pass and oneDNN's math mode: each mode turns on its own and turns
    off the graph pass of a mode set before it (tests and export set several in one process)."""
    monkeypatch.delenv(model.FPMATH_ENV, raising=False)
    # As in a process that has not loaded resnet/kernels (another test here may have).
    monkeypatch.setattr(kernels, "_library", None)
    amp = lambda: bool(tf.config.optimizer.get_experimental_options().get(model.AMP_OPTION))
    model.set_precision("bf16_amp", warn=False)
    assert (model.numerics(), amp()) == ("float32+amp-bf16", True)
    model.set_precision("bf16", warn=False)
    assert (model.numerics(), amp()) == ("bfloat16", False)
    model.set_precision("bf16_fpmath", warn=False)
    assert __import__("os").environ[model.FPMATH_ENV] == "BF16"
    assert model.numerics() == "float32+fpmath-bf16"
    monkeypatch.delenv(model.FPMATH_ENV)
    model.set_precision("fp32", warn=False)
    assert (model.numerics(), amp()) == ("float32", False)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    wrong = tmp_path / "wrong.h5"
    tiny = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    tiny.save_weights(str(wrong))
    with pytest.raises(UsageError, match="does not fit ResNet50 without its top .Layer count"):
        model.build(10, 32, str(wrong), 0)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file")
    with pytest.raises(UsageError, match="cannot load"):
        model.build(10, 32, str(garbage), 0)


@pytest.mark.skipif(not __import__("os").path.exists(SHARED_WEIGHTS),
                    reason="../shared/weights not present")
def test_imagenet_weights_by_path_load():
    m = model.build(10, 64, SHARED_WEIGHTS, 0)
    with h5py.File(SHARED_WEIGHTS, "r") as f:
        conv1 = f["conv1_conv"]["conv1_conv"]["kernel"][()]
    np.testing.assert_array_equal(m.get_layer("resnet50").get_layer("conv1_conv").kernel.numpy(),
                                  conv1)


def test_batchnorm_frozen_or_trained():
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    frozen = model.build(10, 32, "none", 0, batchnorm="frozen")
    # Frozen: training=True changes nothing (no dropout; BatchNorm ignores batch statistics).
    np.testing.assert_allclose(frozen(x, training=True), frozen(x, training=False), atol=1e-6)
    trained = model.build(10, 32, "none", 0, batchnorm="train", bn_momentum=0.5)
    bn = trained.get_layer("resnet50").get_layer("conv1_bn")
    assert bn.momentum == 0.5
    before = bn.moving_mean.numpy().copy()
    trained(x, training=True)
    assert not np.allclose(bn.moving_mean.numpy(), before)  # statistics moved


def _trainable_stages(m) -> set:
    return {layer.name.split("_")[0] for layer in m.get_layer("resnet50").layers
            if layer.trainable_weights}


def test_train_from_freezes_the_stages_before_it():
    m = model.build(10, 32, "none", 0)
    model.set_trainable(m, "full")
    everything = len(m.trainable_variables)
    assert _trainable_stages(m) == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    model.set_trainable(m, "full", "conv3")
    assert _trainable_stages(m) == {"conv3", "conv4", "conv5"}
    assert 0 < len(m.trainable_variables) < everything
    model.set_trainable(m, "head", "conv3")
    assert [v.name.split("/")[0] for v in m.trainable_variables] == ["logits", "logits"]
    model.set_trainable(m, "full", "conv1")  # back to everything: Keras re-enables every layer
    assert len(m.trainable_variables) == everything


def test_frozen_stages_keep_their_weights_through_training():
    m = model.build(10, 32, "none", 0)
    model.set_trainable(m, "full", "conv4")
    m.compile(tf.keras.optimizers.SGD(0.1), tf.keras.losses.CategoricalCrossentropy())
    bb = m.get_layer("resnet50")
    kernels = {name: bb.get_layer(name).kernel.numpy().copy()
               for name in ("conv1_conv", "conv3_block4_3_conv", "conv4_block1_1_conv")}
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = tf.one_hot(rng.integers(0, 10, 8), 10)
    m.fit(x, y, epochs=3, verbose=0)
    np.testing.assert_array_equal(bb.get_layer("conv1_conv").kernel.numpy(), kernels["conv1_conv"])
    np.testing.assert_array_equal(bb.get_layer("conv3_block4_3_conv").kernel.numpy(),
                                  kernels["conv3_block4_3_conv"])
    assert not np.allclose(bb.get_layer("conv4_block1_1_conv").kernel.numpy(),
                           kernels["conv4_block1_1_conv"])
