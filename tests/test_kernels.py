"""The job's own CPU kernels (resnet/kernels): built by the set-up, loaded for training, computing
what TensorFlow's ops compute (bit for bit where the docstrings of fold.cc and backward.cc say
so; the bias gradient as the exact sum, correctly rounded, where TensorFlow's bfloat16 one is
not)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from resnet import kernels, model as model_lib
from resnet.kernels import build
from resnet.training import frozen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def library():
    lib = kernels.load()
    assert lib is not None, (f"{kernels.library_path()} missing: tools/setup.sh builds it "
                             "(python -m resnet.kernels.build)")
    return lib


def _bits(t) -> np.ndarray:
    return tf.bitcast(t, tf.uint16).numpy()


def _bf16(rng, shape, zeros=0.0):
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < zeros] = 0.0
    x[rng.random(shape) < zeros / 4] = -0.0
    return tf.cast(x, tf.bfloat16)


def _special_floats() -> np.ndarray:
    """Ties of the rounding to bfloat16 (both parities), values next to them, NaN, infinities,
    signed zeros, denormals and the largest floats."""
    high = np.arange(0x3f00, 0x3f40, dtype=np.uint32)
    ties = np.concatenate([(high << 16) | low for low in (0x8000, 0x7fff, 0x8001, 0)])
    extra = np.array([0x7fc00000, 0xffc00000, 0x7f800001, 0x7f800000, 0xff800000, 0, 0x80000000,
                      0x00000001, 0x807fffff, 0x7f7fffff, 0x7f7f8000], dtype=np.uint32)
    return np.concatenate([ties, extra, ties | 0x80000000]).view(np.float32)


def test_the_set_up_built_them_and_the_job_loads_them_for_bf16(library, restored_process_state):
    assert os.path.exists(kernels.library_path())
    assert kernels.loaded() and kernels.load() is library  # once per process
    model_lib.set_precision("bf16", warn=False, own_kernels=True)
    assert "own-kernels" in model_lib.numerics()  # conv_forms' timings are keyed by them


def test_scale_to_is_tensorflows_product_and_rounding(library):
    rng = np.random.default_rng(0)
    special = _special_floats()
    kernel = np.concatenate([special, rng.standard_normal(4096 - special.size).astype(np.float32)])
    kernel = tf.constant(kernel.reshape(2, 4, 8, 64))
    scale = tf.constant(np.concatenate([[1.0] * 32, rng.uniform(0.2, 3.0, 32)]).astype(np.float32))
    grad = _bf16(rng, kernel.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([kernel, scale])
        ours = kernels.scale_to(kernel, scale, tf.bfloat16)
        theirs = tf.cast(kernel * scale, tf.bfloat16)
    assert ours.dtype == tf.bfloat16
    np.testing.assert_array_equal(_bits(ours), _bits(theirs))  # NaNs, ties, denormals too
    d_ours = tape.gradient(ours, [kernel, scale], output_gradients=grad)
    d_theirs = tape.gradient(theirs, [kernel, scale], output_gradients=grad)
    np.testing.assert_array_equal(d_ours[0].numpy(), d_theirs[0].numpy())
    # The scale's gradient sums over the kernel's rows in another order: float32 round-off. Its
    # NaN and infinite products make some channels NaN in both.
    a, b = d_ours[1].numpy(), d_theirs[1].numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    finite = np.isfinite(b)
    assert finite.sum() >= 32
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-5, atol=1e-4)
    assert any(op.type == "ScaleToBfloat16" for op in tf.function(
        lambda k: kernels.scale_to(k, scale, tf.bfloat16)).get_concrete_function(
            kernel).graph.get_operations())
    # float32 is TensorFlow's product: nothing to round.
    np.testing.assert_array_equal(kernels.scale_to(kernel, scale, tf.float32).numpy(),
                                  (kernel * scale).numpy())


def test_scale_to_refuses_a_scale_that_does_not_match_the_kernel(library):
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale must be a vector as long"):
        library.scale_to_bfloat16(tf.zeros([3, 3, 4, 8]), tf.ones([4]))


_THEIRS = """
import sys, numpy as np, resnet, tensorflow as tf
rng = np.random.default_rng(int(sys.argv[2]))
out = {}
for i, shape in enumerate([(8, 6, 6, 96), (3, 5, 7), (1, 1000003)]):
    g, f, h = (tf.cast(rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) > 0.2),
                       tf.bfloat16) for _ in range(3))
    out[f"relu{i}"] = tf.raw_ops.ReluGrad(gradients=g, features=f)
    out[f"add2_{i}"] = tf.raw_ops.AddN(inputs=[g, h])
    out[f"add3_{i}"] = tf.raw_ops.AddN(inputs=[g, h, f])
    out[f"in{i}"] = tf.stack([g, f, h])
# NaNs of both signs, infinities, signed zeros and denormals, in every role.
special = np.array([0x7fc0, 0xffc0, 0x7f81, 0x7f80, 0xff80, 0, 0x8000, 1, 0x8001, 0x7f7f, 0x3f80,
                    0xbf80], np.uint16)
g, f, h = (tf.bitcast(tf.constant(np.roll(np.repeat(special, 144), k)), tf.bfloat16)
           for k in (0, 12, 144 * 5 + 7))
i = 3
out[f"relu{i}"] = tf.raw_ops.ReluGrad(gradients=g, features=f)
out[f"add2_{i}"] = tf.raw_ops.AddN(inputs=[g, h])
out[f"add3_{i}"] = tf.raw_ops.AddN(inputs=[g, h, f])
out[f"in{i}"] = tf.stack([g, f, h])
np.savez(sys.argv[1], **{k: tf.bitcast(v, tf.uint16).numpy() for k, v in out.items()})
"""


def test_relugrad_and_addn_are_tensorflows_own_bit_for_bit(library, tmp_path):
    """TensorFlow's own kernels run in a process that never loads ours (once loaded, ours run
    every bfloat16 ReluGrad and AddN)."""
    path = tmp_path / "theirs.npz"
    subprocess.run([sys.executable, "-c", _THEIRS, str(path), "7"], cwd=ROOT, check=True,
                   capture_output=True)
    theirs = np.load(path)
    for i in range(4):
        g, f, h = (tf.bitcast(tf.constant(x), tf.bfloat16) for x in theirs[f"in{i}"])
        np.testing.assert_array_equal(
            _bits(tf.raw_ops.ReluGrad(gradients=g, features=f)), theirs[f"relu{i}"])
        np.testing.assert_array_equal(_bits(tf.raw_ops.AddN(inputs=[g, h])), theirs[f"add2_{i}"])
        np.testing.assert_array_equal(_bits(tf.raw_ops.AddN(inputs=[g, h, f])),
                                      theirs[f"add3_{i}"])
    # Signed zeros and NaN gradients as TensorFlow's product gives them.
    g = tf.constant([-1.0, 1.0, np.nan, -2.0, np.inf, 3.0], tf.bfloat16)
    f = tf.constant([0.0, -1.0, 0.0, np.nan, 1.0, np.inf], tf.bfloat16)
    np.testing.assert_array_equal(
        _bits(tf.raw_ops.ReluGrad(gradients=g, features=f)),
        _bits(tf.cast(tf.cast(g, tf.float32) * tf.cast(tf.cast(f, tf.float32) > 0, tf.float32),
                      tf.bfloat16)))


_THEIRS_UPDATE = """
import sys, numpy as np, resnet, tensorflow as tf
rng = np.random.default_rng(int(sys.argv[2]))
out = {}
for nesterov in (False, True):
    v, m = (tf.Variable(rng.standard_normal(30011).astype(np.float32)) for _ in range(2))
    out[f"v0_{nesterov}"], out[f"m0_{nesterov}"] = v.numpy(), m.numpy()
    for k in range(3):
        g = rng.standard_normal(30011).astype(np.float32)
        out[f"g{k}_{nesterov}"] = g
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=v.handle, accum=m.handle, lr=np.float32(0.0123), grad=g,
            momentum=np.float32(0.9), use_locking=False, use_nesterov=nesterov)
    out[f"v_{nesterov}"], out[f"m_{nesterov}"] = v.numpy(), m.numpy()
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in out.items()})
"""


def test_the_momentum_update_is_tensorflows_own_bit_for_bit(library, tmp_path):
    """ResourceApplyKerasMomentum (plain and Nesterov, three steps) against TensorFlow's kernel in
    a process that never loads ours."""
    path = tmp_path / "theirs.npz"
    subprocess.run([sys.executable, "-c", _THEIRS_UPDATE, str(path), "11"], cwd=ROOT,
                   check=True, capture_output=True)
    theirs = np.load(path)
    for nesterov in (False, True):
        v, m = (tf.Variable(theirs[f"{n}0_{nesterov}"]) for n in "vm")
        for k in range(3):
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=v.handle, accum=m.handle, lr=np.float32(0.0123),
                grad=theirs[f"g{k}_{nesterov}"], momentum=np.float32(0.9), use_locking=False,
                use_nesterov=nesterov)
        np.testing.assert_array_equal(v.numpy(), theirs[f"v_{nesterov}"])
        np.testing.assert_array_equal(m.numpy(), theirs[f"m_{nesterov}"])


def test_the_momentum_update_leaves_a_read_it_overtakes_and_refuses_bad_shapes(library):
    v, m = tf.Variable(tf.ones([1000])), tf.Variable(tf.zeros([1000]))
    held = v.read_value()  # shares the variable's buffer: the update must copy first
    tf.raw_ops.ResourceApplyKerasMomentum(var=v.handle, accum=m.handle, lr=np.float32(1.0),
                                          grad=tf.ones([1000]), momentum=np.float32(0.9),
                                          use_locking=False, use_nesterov=False)
    assert held.numpy().min() == held.numpy().max() == 1.0
    assert v.numpy().min() == v.numpy().max() == 0.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same shape"):
        tf.raw_ops.ResourceApplyKerasMomentum(var=v.handle, accum=m.handle, lr=np.float32(1.0),
                                              grad=tf.ones([999]), momentum=np.float32(0.9))
    with pytest.raises(tf.errors.InvalidArgumentError, match="lr and momentum must be scalars"):
        tf.raw_ops.ResourceApplyKerasMomentum(var=v.handle, accum=m.handle, lr=tf.ones([2]),
                                              grad=tf.ones([1000]), momentum=np.float32(0.9))
    assert v.numpy().min() == v.numpy().max() == 0.0  # refused: nothing written


@pytest.mark.parametrize("shape,data_format", [((16, 28, 28, 64), "NHWC"), ((4, 9, 257), "NHWC"),
                                                ((4, 64, 28, 28), "NCHW"), ((3, 5, 2), "NCHW")])
def test_the_bias_gradient_is_the_exact_sum_correctly_rounded(library, shape, data_format):
    """TensorFlow's bfloat16 BiasAddGrad sums in bfloat16 and loses whole percents at the job's
    map sizes (BENCHMARKS.md); ours sums in float32, within one bfloat16 step of the exact
    sum."""
    rng = np.random.default_rng(3)
    x = tf.cast(rng.standard_normal(shape).astype(np.float32) + 0.3, tf.bfloat16)
    wide = tf.cast(x, tf.float64).numpy()
    axes = tuple(a for a in range(len(shape)) if a != (1 if data_format == "NCHW" else len(shape) - 1))
    exact = wide.sum(axes)
    got = tf.cast(tf.raw_ops.BiasAddGrad(out_backprop=x, data_format=data_format),
                  tf.float64).numpy()
    assert got.shape == exact.shape
    step = np.maximum(np.abs(exact), 1e-30) * 2.0 ** -7  # bfloat16's step at that magnitude
    assert np.all(np.abs(got - exact) <= step), np.max(np.abs(got - exact) / step)


def test_the_trained_fold_with_them_is_the_fold_without(library, restored_process_state,
                                                        monkeypatch):
    """The job's step traced with the kernels and with TensorFlow's ops for the fold: the same
    forward bits (the product is rounded alike), gradients equal up to float32 round-off of the
    scale's sum and the bias gradients' (TensorFlow's bfloat16 ones differ more)."""
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv4")
    backbone = model_lib.backbone(model)
    monkeypatch.setattr(frozen, "ACTIVATIONS_PER_WEIGHT", 0.0)  # every trained pair folds
    x = tf.random.stateless_uniform([4, 32, 32, 3], [5, 6], maxval=255)

    def step():
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(10, dtype=tf.float32))
        return y, tape.gradient(loss, model.trainable_variables)

    results = {}
    for name in ("ours", "theirs"):
        if name == "theirs":
            monkeypatch.setattr(kernels, "_library", None)
        with frozen.training(backbone, frozen.Folds(), trained=True):
            fn = tf.function(step)
            ops = [op.type for op in fn.get_concrete_function().graph.get_operations()]
            assert (ops.count("ScaleToBfloat16") == 29) == (name == "ours")
            results[name] = fn()
    (y1, g1), (y2, g2) = results["ours"], results["theirs"]
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    for a, b in zip(g1, g2):
        a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.02 * np.abs(b).max())


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float32])
def test_the_columns_op_is_tensorflows_pad_slices_and_concat(library, dtype, monkeypatch):
    """conv_forms.columns() for a 3x3 kernel with the op (loaded) and with TensorFlow's ops (not):
    the same bits forward and back, on the job's map sizes and odd ones (1x1 and 2x5 maps, one
    channel)."""
    from resnet.training import conv_forms
    rng = np.random.default_rng(5)
    for shape in [(4, 6, 6, 32), (2, 3, 3, 16), (3, 1, 1, 8), (2, 2, 5, 1), (1, 14, 14, 64)]:
        x = tf.cast(rng.standard_normal(shape).astype(np.float32), dtype)
        d = tf.cast(rng.standard_normal(shape[:3] + (9 * shape[3],)).astype(np.float32), dtype)

        def both():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = conv_forms.columns(x, 3, 1)
            return y, tape.gradient(y, x, output_gradients=d)

        graph = tf.function(both).get_concrete_function().graph
        assert "Columns3x3" in [op.type for op in graph.get_operations()]
        ours = both()
        with monkeypatch.context() as m:
            m.setattr(kernels, "_library", None)
            theirs = both()
            assert "Columns3x3" not in [op.type for op in tf.function(
                both).get_concrete_function().graph.get_operations()]
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(tf.cast(a, tf.float32).numpy(),
                                          tf.cast(b, tf.float32).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be 9 x the input's"):
        library.columns3x3_grad(tf.zeros([1, 2, 2, 10], dtype))


def test_build_finds_the_built_library_and_says_what_to_do_when_it_cannot(library, tmp_path):
    assert build.build() == kernels.library_path()  # built: nothing compiled
    with pytest.raises(RuntimeError, match="no no-such-compiler on PATH.*install one"):
        build.build(prefix=str(tmp_path), compiler="no-such-compiler")
    assert not os.path.exists(os.path.dirname(kernels.library_path(str(tmp_path))))
    # A compiler that fails (`false` exits 1): said, and no library, half-written or not, left.
    with pytest.raises(RuntimeError, match="false could not build resnet/kernels"):
        build.build(prefix=str(tmp_path), compiler="false")
    assert os.listdir(os.path.dirname(kernels.library_path(str(tmp_path)))) == []
    done = subprocess.run([sys.executable, "-m", "resnet.kernels.build", f"--prefix={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CXX": "no-such-compiler"})
    assert done.returncode == 1 and "resnet.kernels.build: no no-such-compiler on PATH" in \
        done.stderr, done.stderr[-2000:]
