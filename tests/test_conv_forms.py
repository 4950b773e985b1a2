"""Trained convolutions as matmuls (resnet/training/conv_forms.py): the same maths and gradients
as the convolution, applied only while a training step is traced, chosen once per machine."""

import json

import numpy as np
import pytest
import tensorflow as tf

from resnet import model as model_lib
from resnet.training import conv_forms


def _conv_and_grads(x, kernel, stride, padding, form):
    x, kernel = tf.constant(x), tf.Variable(kernel)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if form == "matmul":
            y = conv_forms.as_matmul(x, kernel, kernel.shape[0], stride)
        elif form == "matmul_dw":
            y = conv_forms.with_matmul_dw(x, kernel, kernel.shape[0], stride, padding)
        else:
            y = tf.nn.conv2d(x, kernel, stride, padding)
        # Weighted, so that a misplaced output pixel or channel changes the gradients.
        loss = tf.reduce_sum(y * tf.reshape(tf.range(tf.size(y), dtype=y.dtype), y.shape) / 1e3)
    return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x, kernel])]


@pytest.mark.parametrize("form", ["matmul", "matmul_dw"])
@pytest.mark.parametrize("size,kernel,stride,padding", [
    (6, 1, 1, "VALID"), (12, 1, 2, "VALID"), (7, 1, 2, "SAME"), (3, 3, 1, "SAME"),
    (1, 3, 1, "SAME"), (5, 3, 1, "SAME")])
def test_each_form_is_the_convolution_with_the_same_gradients(size, kernel, stride, padding,
                                                              form):
    rng = np.random.default_rng(0)
    # Channels a multiple of 8, as every ResNet50 layer's: with 4 or 5 input channels, TF 2.21's
    # oneDNN weight gradient of a 1x1 stride-2 convolution on an even map is itself wrong on AVX2
    # (docs/experiments.md, 2026-12-01), and the matmul is what is right.
    x = rng.normal(size=(2, size, size, 16)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 16, 8)).astype(np.float32)
    conv = _conv_and_grads(x, w, stride, padding, "conv")
    mm = _conv_and_grads(x, w, stride, padding, form)
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), conv, mm):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)


def test_eligible_layers_are_the_1x1_and_3x3_convolutions_only():
    backbone = model_lib.backbone(model_lib.build(10, 32, "none", 0))
    kinds = {(layer.kernel_size, layer.strides) for layer in backbone.layers
             if conv_forms.eligible(layer)}
    assert kinds == {((1, 1), (1, 1)), ((1, 1), (2, 2)), ((3, 3), (1, 1))}
    assert not conv_forms.eligible(backbone.get_layer("conv1_conv"))  # the 7x7 stem
    assert not conv_forms.eligible(tf.keras.layers.DepthwiseConv2D(3))


def _graph_ops(model, x):
    fn = tf.function(lambda v: model(v, training=False))
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


def test_forms_apply_inside_training_only_and_keep_the_weights():
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv5")
    backbone = model_lib.backbone(model)
    layers = conv_forms.trained_layers(backbone)
    assert layers and all(layer.name.startswith("conv5") for layer in layers)
    names = {layer.name: [v.name for v in layer.weights] for layer in backbone.layers}
    x = tf.random.stateless_uniform([2, 32, 32, 3], [1, 2], maxval=255)
    before = model(x).numpy()
    forms = conv_forms.choose(model, layers, 2, "matmul")
    assert set(forms) == {layer.name for layer in layers}
    with conv_forms.training(backbone, forms):
        inside = model(x).numpy()
        # A traced step inside: the conv5 stage's convolutions are MatMuls now ...
        ops = _graph_ops(tf.keras.Sequential([layers[-1]]), tf.zeros([1, 1, 1, 512]))
        assert "MatMul" in ops and "Conv2D" not in ops
    np.testing.assert_allclose(inside, before, rtol=1e-4, atol=1e-5)
    # ... and outside, the class's convolution again, over the same variables.
    assert "convolution_op" not in vars(layers[0])
    assert "Conv2D" in _graph_ops(tf.keras.Sequential([layers[-1]]), tf.zeros([1, 1, 1, 512]))
    assert names == {layer.name: [v.name for v in layer.weights] for layer in backbone.layers}


def test_shapes_are_each_layers_map_at_the_views_size():
    model = model_lib.build(10, 96, "none", 0, any_size=True)
    model_lib.set_trainable(model, "full", "conv4")
    layers = conv_forms.trained_layers(model_lib.backbone(model))
    shapes = conv_forms.shapes(model, layers, 32)
    assert shapes["conv5_block2_2_conv"] == conv_forms.Shape(32, 3, 3, 512, 512, 3, 1)
    assert shapes["conv4_block1_0_conv"] == conv_forms.Shape(32, 12, 12, 512, 1024, 1, 2)
    view = model_lib.at_size(model, 128, "frozen")
    assert conv_forms.shapes(view, layers, 32)["conv5_block2_2_conv"].height == 4


def test_auto_times_once_per_machine_and_survives_a_corrupt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv5")
    layers = conv_forms.trained_layers(model_lib.backbone(model))
    path = tmp_path / "resnet-horovod" / "conv_forms.json"
    path.parent.mkdir()
    path.write_text("{not json")  # a half-written file from a crash: measured again
    forms = conv_forms.choose(model, layers, 2, "auto")
    cache = json.loads(path.read_text())
    (key, timings), = cache.items()
    assert "float32" in key and "intra" in key
    assert set(timings) == {str(s) for s in conv_forms.shapes(model, layers, 2).values()}
    assert all(set(t) == set(conv_forms.FORMS) for t in timings.values())
    # Cached timings decide the second time: the fastest form wins, each shape on its own.
    wins = {}
    for i, (shape, t) in enumerate(sorted(timings.items())):
        wins[shape] = ("matmul", "matmul_dw")[i % 2]
        t.update({"matmul": t["conv"] * 2, "matmul_dw": t["conv"] * 2, wins[shape]: t["conv"] / 10})
    path.write_text(json.dumps(cache))
    shapes = conv_forms.shapes(model, layers, 2)
    assert conv_forms.choose(model, layers, 2, "auto") == {
        layer.name: wins[str(shapes[layer.name])] for layer in layers}
    assert set(wins.values()) == {"matmul", "matmul_dw"}  # conv5 has 3 shapes: both forms won
    for t in timings.values():  # within the margin: conv stays
        t.update(matmul=t["conv"] * (1 - conv_forms.MARGIN / 2), matmul_dw=t["conv"] * 1.5)
    path.write_text(json.dumps(cache))
    assert conv_forms.choose(model, layers, 2, "auto") == {}
    assert isinstance(forms, dict)


def test_timings_under_one_onednn_isa_cap_do_not_decide_for_another(monkeypatch):
    # ONEDNN_MAX_CPU_ISA is read when oneDNN first dispatches, so the key is all that can differ
    # in one process: a cap set for a later run must give that run timings of its own.
    for name in conv_forms.ONEDNN_KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    uncapped = conv_forms.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = conv_forms.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert len({uncapped, capped, conv_forms.machine_key()}) == 3
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert "TF_ENABLE_ONEDNN_OPTS=0" in conv_forms.machine_key()


def test_the_weight_gradient_form_keeps_the_convolution_and_only_its_weight_gradient_differs():
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv5")
    backbone = model_lib.backbone(model)
    layers = conv_forms.trained_layers(backbone)
    forms = conv_forms.choose(model, layers, 2, "matmul_dw")
    assert forms == {layer.name: "matmul_dw" for layer in layers}
    layer = backbone.get_layer("conv5_block1_2_conv")  # a 3x3 one
    x = tf.random.stateless_normal([2, 1, 1, 512], [3, 4])
    with conv_forms.training(backbone, forms):
        ops = _graph_ops(tf.keras.Sequential([layer]), x)

        @tf.function
        def kernel_gradient(v):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(v) ** 2)
            return tape.gradient(loss, layer.kernel)
        grad_ops = {op.type for op in
                    kernel_gradient.get_concrete_function(x).graph.get_operations()}
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y ** 2)
        grads = tape.gradient(loss, layer.trainable_weights)
    # Forward: Keras's own convolution; its weight gradient: a MatMul, not Conv2DBackpropFilter.
    assert "Conv2D" in ops and "MatMul" not in ops
    assert "MatMul" in grad_ops and "Conv2DBackpropFilter" not in grad_ops, grad_ops
    with tf.GradientTape() as tape:
        y_conv = layer(x)
        loss = tf.reduce_sum(y_conv ** 2)
    expected = tape.gradient(loss, layer.trainable_weights)
    np.testing.assert_array_equal(y.numpy(), y_conv.numpy())
    assert len(grads) == 2 and not np.allclose(grads[0].numpy(), 0)
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_auto_keeps_a_resumed_checkpoints_forms_unless_it_names_an_untrained_layer(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv5")
    layers = conv_forms.trained_layers(model_lib.backbone(model))
    one = {layers[0].name: "matmul"}
    assert conv_forms.choose(model, layers, 2, "auto", recorded=one) == one
    assert conv_forms.choose(model, layers, 2, "auto", recorded={}) == {}
    assert not (tmp_path / "resnet-horovod").exists()  # nothing was timed
    # A record from a run that trained other layers (another --train_from): timed afresh.
    forms = conv_forms.choose(model, layers, 2, "auto", recorded={"conv4_block1_1_conv": "matmul"})
    assert (tmp_path / "resnet-horovod" / "conv_forms.json").exists()
    assert set(forms) <= {layer.name for layer in layers}
    # The record is auto's: the other settings mean what they say.
    assert conv_forms.choose(model, layers, 2, "conv", recorded=one) == {}
    assert len(conv_forms.choose(model, layers, 2, "matmul", recorded=one)) == len(layers)


def test_conv_setting_and_frozen_backbone_choose_nothing():
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "head")
    assert conv_forms.trained_layers(model_lib.backbone(model)) == []
    model_lib.set_trainable(model, "full", "conv5")
    layers = conv_forms.trained_layers(model_lib.backbone(model))
    assert conv_forms.choose(model, layers, 2, "conv") == {}


def test_the_profile_refuses_steps_it_cannot_profile():
    import subprocess
    import sys

    from conftest import ROOT, job_env
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profile", "--profile_steps=0"],
                          cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--profile_steps and --warmup_steps: at least 1 each" in \
        proc.stderr, proc.stderr[-2000:]


def test_the_forms_benchmark_refuses_a_setting_it_does_not_know_before_building_anything():
    import subprocess
    import sys

    from conftest import ROOT, job_env
    proc = subprocess.run([sys.executable, "-m", "benchmarks.conv_forms",
                           "--settings=auto+fold,conv+flod"], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--settings: conv+flod: use auto, conv, matmul or matmul_dw (--conv_forms's values), " \
           "each optionally +fold, +fold_frozen, +fold_every and +keras_sgd" in proc.stderr
    assert "conv_forms=auto" not in proc.stderr  # nothing was timed or built
