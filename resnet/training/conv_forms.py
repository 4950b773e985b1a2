"""The form each trained convolution computes in while training: oneDNN's convolution (conv), the
same maths as one matmul (matmul), or the convolution with its weight gradient alone as a matmul
(matmul_dw). Chosen per layer shape on the CPU it runs on, by timing all three at start-up.

  1x1 kernel:  out[n,h,w,:] = x[n, s*h, s*w, :] @ kernel[0,0]           (s: the stride)
  3x3 kernel:  out = concat(the nine shifted copies of the padded map) @ kernel reshaped to [9C, F]
  matmul_dw:   out = conv(x, kernel), d_x = oneDNN's data gradient, d_kernel = columns(x)^T @ d_out

Why: on the small feature maps CIFAR images leave conv4 and conv5, oneDNN's convolutions are slow,
its weight gradients above all (on AVX2 a 3x3 layer's weight gradient at 1x1 or 2x2 pixels falls to
a generic gemm implementation; on AMX the 1x1 layers at 3x3 pixels ran 3.6x slower than as a
matmul), while a matmul's gradients are matmuls too. On AMX a 3x3 layer at 6x6 or 7x7 pixels
keeps oneDNN's forward and data gradient, which are fast there, and loses only its slow weight
gradient (matmul_dw). Which form wins depends on the CPU, the map and the batch, so it is
measured rather than assumed (BENCHMARKS.md, "Convolution forms").

The weights are untouched: the form replaces only the layer's convolution_op (Keras's hook for
it) on this process's layers, and only while training steps are traced (`training()`).
Evaluation, checkpoints, export and saved models see Keras's own Conv2D, so a plain Keras load
opens them and 1 and 2 ranks evaluate identically.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import statistics
import time
from typing import Dict, Iterator, List, Mapping, Optional

import tensorflow as tf
from absl import logging

from resnet import fileio, kernels, model as model_lib
from resnet.runtime import topology

# A matmul is kept only when it is this much faster than the convolution: a tie stays with
# oneDNN's convolution, and timing noise of a few percent never flips a layer.
MARGIN = 0.10
# Part of the cache key: timings taken another way (an older version of measure() or of
# as_matmul) are retaken.
METHOD = "m4"
# What measure() times; every form but conv replaces the layer's convolution while training.
FORMS = ("conv", "matmul", "matmul_dw")
ROUNDS, WARMUP = 7, 2  # timed calls of each form, interleaved, the median kept; untimed ones first


@dataclasses.dataclass(frozen=True)
class Shape:
    """One convolution as a rank trains it: its input map, kernel and stride."""
    batch: int
    height: int
    width: int
    channels: int
    filters: int
    kernel: int
    stride: int
    bias: bool = True

    def __str__(self):
        return (f"{self.kernel}x{self.kernel}/{self.stride} at {self.height}x{self.width}, "
                f"{self.channels}->{self.filters}{'' if self.bias else ' no bias'}, "
                f"batch {self.batch}")


def eligible(layer) -> bool:
    """A Conv2D that a matmul can stand in for exactly: 1x1 at any stride, or 3x3 'same' at
    stride 1 (every convolution of ResNet50 but the 7x7 stem)."""
    if type(layer) is not tf.keras.layers.Conv2D:  # not a subclass (depthwise, separable)
        return False
    if layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1) or \
            layer.data_format != "channels_last" or layer.strides[0] != layer.strides[1]:
        return False
    if tuple(layer.kernel_size) == (1, 1):
        return layer.padding in ("valid", "same")
    return tuple(layer.kernel_size) == (3, 3) and tuple(layer.strides) == (1, 1) and \
        layer.padding == "same"


def columns(x, size: int, stride: int):
    """The rows a `size`x`size` convolution's matmul multiplies: [N, H', W', size*size*C].

    Slices are tf.slice, never Python's x[...] (a StridedSlice): a Slice's gradient is a Pad,
    while StridedSliceGrad took 6% of the default recipe's step on AVX2 (BENCHMARKS.md)."""
    if size == 1:
        if stride > 1:  # 'valid' and 'same' agree for a 1x1 kernel: each s x s's top-left pixel
            _, height, width, channels = x.shape
            if height and width and height % stride == 0 and width % stride == 0:
                x = tf.reshape(x, [-1, height // stride, stride, width // stride, stride,
                                   channels])
                x = tf.slice(x, [0] * 6, [-1, -1, 1, -1, 1, -1])
                x = tf.reshape(x, [-1, height // stride, width // stride, channels])
            else:  # an odd or unknown side: the strided slice
                x = x[:, ::stride, ::stride, :]
        return x
    if size == 3 and stride == 1 and (rows := kernels.columns3x3(x)) is not None:
        return rows  # one pass each way (resnet/kernels/columns.cc), where loaded
    pad = size // 2
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    # Row-major over (dy, dx, channel), the order of kernel.reshape([size*size*C, F]).
    return tf.concat([tf.slice(padded, [0, dy, dx, 0], tf.stack([-1, height, width, -1]))
                      for dy in range(size) for dx in range(size)], axis=-1)


def as_matmul(x, kernel, size: int, stride: int):
    """Conv2D(x, kernel) with a `size`x`size` kernel as one matmul (see the module's note)."""
    x = columns(x, size, stride)
    filters = kernel.shape[-1]
    dims = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), tf.reshape(kernel, [-1, filters]))
    return tf.reshape(y, tf.concat([dims[:3], [filters]], 0))


def with_matmul_dw(x, kernel, size: int, stride: int, padding: str = "SAME"):
    """Conv2D(x, kernel): oneDNN's convolution forward and data gradient, and the weight gradient
    as one matmul of the input's columns with the output gradient (the same sum, in another
    order). `padding` is the layer's ('valid' and 'same' agree for a 1x1 kernel)."""
    padding = padding.upper()
    # Read the variable (Keras's AutoCastVariable: in the compute type) before the custom
    # gradient: a variable passed through it would get no gradient.
    kernel = tf.convert_to_tensor(kernel)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(d_out):
            d_x = tf.nn.conv2d_transpose(d_out, kernel, tf.shape(x), stride, padding)
            rows = columns(x, size, stride)
            d_kernel = tf.matmul(tf.reshape(rows, [-1, rows.shape[-1]]),
                                 tf.reshape(d_out, [-1, kernel.shape[-1]]), transpose_a=True)
            return d_x, tf.reshape(d_kernel, tf.shape(kernel))
        return tf.nn.conv2d(x, kernel, stride, padding), grad
    return conv(x, kernel)


def trained_layers(backbone: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    """The backbone's eligible convolutions that this phase trains."""
    if not backbone.trainable:
        return []
    return [layer for layer in backbone.layers if eligible(layer) and layer.trainable]


def shapes(model: tf.keras.Model, layers, batch: int) -> Dict[str, Shape]:
    """Each layer's Shape in `model` (a view at one image size) at `batch` images, from one eager
    call on a single blank image (the backbone may be built for any size, so its layers do not
    know their maps)."""
    found = {}

    def recorder(layer):
        def op(inputs, kernel):
            _, h, w, c = inputs.shape
            found[layer.name] = Shape(batch, h, w, c, kernel.shape[-1], layer.kernel_size[0],
                                      layer.strides[0], layer.use_bias)
            return type(layer).convolution_op(layer, inputs, kernel)
        return op

    with _replaced({layer: recorder(layer) for layer in layers}):
        model(tf.zeros([1, *model.input_shape[1:]], model.input.dtype), training=False)
    return found


def _step(form: str, shape: Shape, dtype):
    """A traced forward + all gradients of one layer's convolution (and bias) in `form`, on
    random data: as the training step runs it, where oneDNN fuses the bias into the convolution
    and its weight gradient, and the matmul form adds it on its own."""
    x = tf.cast(tf.random.stateless_normal(
        [shape.batch, shape.height, shape.width, shape.channels], [0, 0]), dtype)
    kernel = tf.Variable(tf.random.stateless_normal(
        [shape.kernel, shape.kernel, shape.channels, shape.filters], [0, 1]) * 0.01)
    bias = tf.Variable(tf.zeros([shape.filters]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            w = tf.cast(kernel, dtype)  # as Keras reads a float32 variable under mixed_bfloat16
            if form == "matmul":
                y = as_matmul(x, w, shape.kernel, shape.stride)
            elif form == "matmul_dw":
                y = with_matmul_dw(x, w, shape.kernel, shape.stride)
            else:
                y = tf.nn.conv2d(x, w, shape.stride, "SAME")
            if shape.bias:
                y = tf.nn.bias_add(y, tf.cast(bias, dtype))
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)  # a gradient that is not constant
        grads = tape.gradient(loss, [x, kernel, bias] if shape.bias else [x, kernel])
        return sum(tf.reduce_sum(tf.cast(g, tf.float32)[..., :1]) for g in grads)
    return step


def measure(shape: Shape, dtype) -> Dict[str, float]:
    """The median of ROUNDS calls of each form, in seconds, the forms interleaved so that a
    slow spell of a shared machine hits them alike."""
    steps = {form: _step(form, shape, dtype) for form in FORMS}
    for step in steps.values():
        for _ in range(WARMUP):
            step().numpy()
    seconds = {form: [] for form in steps}
    for _ in range(ROUNDS):
        for form, step in steps.items():
            start = time.perf_counter()
            step().numpy()
            seconds[form].append(time.perf_counter() - start)
    return {form: statistics.median(s) for form, s in seconds.items()}


def choose(model: tf.keras.Model, layers, batch: int, setting: str,
           recorded: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Layer name -> its form ('matmul' or 'matmul_dw') for each layer not trained as oneDNN's
    convolution (the others stay convolutions).
    setting: 'conv' (none), 'matmul' or 'matmul_dw' (every eligible layer in that form), 'auto'
    (the fastest form of each shape where it beats the convolution by MARGIN, measured once
    per machine: the cache). recorded: auto's choice in the checkpoint a run resumes, kept so
    that its steps compute as the first run's did (a requeue onto another CPU would time
    otherwise); ignored when it names a layer that this run does not train."""
    if setting == "conv" or not layers:
        return {}
    by_layer = shapes(model, layers, batch)
    if setting in FORMS[1:]:
        return {name: setting for name in by_layer}
    if recorded is not None and set(recorded) <= set(by_layer):
        logging.info("--conv_forms=auto: %s, as the checkpoint resumed recorded them",
                     summary(recorded, len(by_layer)))
        return dict(recorded)
    dtype = tf.keras.mixed_precision.global_policy().compute_dtype
    started, lines = time.perf_counter(), []
    winners = {}
    with _Cache(machine_key()) as cache:
        for shape in sorted(set(by_layer.values()), key=str):
            t = cache.get(shape) or cache.put(shape, measure(shape, dtype))
            winners[shape] = winner(t)
            lines.append(f"  {shape}: " + ", ".join(f"{f} {t[f] * 1e3:.1f} ms" for f in FORMS)
                         + f" -> {winners[shape]}")
    forms = {name: winners[shape] for name, shape in by_layer.items()
             if winners[shape] != "conv"}
    logging.info("--conv_forms=auto: %s (forward + both gradients timed on this machine, %s; "
                 "%.1f s, cache %s):\n%s", summary(forms, len(by_layer)), model_lib.numerics(),
                 time.perf_counter() - started, cache_path(), "\n".join(lines))
    return forms


def winner(timings: Mapping[str, float]) -> str:
    """The fastest form, where it beats the convolution by MARGIN; else 'conv'."""
    form = min(FORMS, key=lambda f: timings[f])
    return form if timings[form] < timings["conv"] * (1 - MARGIN) else "conv"


def summary(forms: Mapping[str, str], trained: int) -> str:
    counts = {f: sum(1 for v in forms.values() if v == f) for f in FORMS[1:]}
    return (f"{counts['matmul']} of {trained} trained convolutions as matmuls, "
            f"{counts['matmul_dw']} with the weight gradient alone as a matmul")


def cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "resnet-horovod", "conv_forms.json")


def read_cache() -> dict:
    """Every machine key's timings; {} when the file is missing, unreadable or corrupt (then
    measured again)."""
    try:
        with open(cache_path()) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


# Settings that change which kernels oneDNN runs on the same CPU: oneDNN on or off in
# TensorFlow, and a cap or hint on its instruction set (a user comparing AVX2 with AVX-512 on
# one machine, or AMX with AVX512-BF16). Timings under one must not decide for another.
ONEDNN_KEY_ENV = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                  "ONEDNN_CPU_ISA_HINTS", "DNNL_CPU_ISA_HINTS")


def machine_key() -> str:
    """What a timing depends on besides the shape: the CPU, TensorFlow (its oneDNN), how this
    process computes (model.numerics: the compute type, a bf16 graph pass or math mode), oneDNN's
    own settings (ONEDNN_KEY_ENV, where set) and its threads."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "")
    flags = hashlib.sha256(" ".join(sorted(topology.cpu_flags() or ())).encode()).hexdigest()[:12]
    onednn = "".join(f" {k}={os.environ[k]}" for k in ONEDNN_KEY_ENV if os.environ.get(k))
    return (f"{model} flags:{flags} tf{tf.__version__} {model_lib.numerics()}{onednn} {METHOD} "
            f"intra{tf.config.threading.get_intra_op_parallelism_threads()} "
            f"inter{tf.config.threading.get_inter_op_parallelism_threads()}")


class _Cache:
    """The timings measured on this machine (JSON; the newest writer's file wins whole).

    Held under a lock while a run reads and measures: two runs starting together on one machine
    (test workers, ranks of two jobs) then agree on every layer's form instead of each timing
    its own and training slightly different numerics. Corrupt or unreadable: measured again."""

    def __init__(self, key: str):
        self.key, self.path = key, cache_path()

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.lock = open(self.path + ".lock", "a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.entries = read_cache()
        return self

    def get(self, shape: Shape):
        t = self.entries.get(self.key, {}).get(str(shape))
        return t if isinstance(t, dict) and set(FORMS) <= set(t) else None

    def put(self, shape: Shape, timings: dict) -> dict:
        self.entries.setdefault(self.key, {})[str(shape)] = timings
        return timings

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                fileio.write_json_atomic(self.path, self.entries)
        finally:
            self.lock.close()  # releases the lock


def _op(layer, form: str):
    size, stride = layer.kernel_size[0], layer.strides[0]
    if form == "matmul_dw":
        return lambda inputs, kernel: with_matmul_dw(inputs, kernel, size, stride, layer.padding)
    return lambda inputs, kernel: as_matmul(inputs, kernel, size, stride)


@contextlib.contextmanager
def _replaced(ops: Mapping) -> Iterator[None]:
    # An instance attribute shadows Conv2D.convolution_op; deleting it brings the class's back.
    for layer, op in ops.items():
        layer.convolution_op = op
    try:
        yield
    finally:
        for layer in ops:
            del layer.convolution_op


def training(backbone: tf.keras.Model, forms: Mapping[str, str]):
    """Within it, the layers named in `forms` compute in their form: trace the training step
    here."""
    return _replaced({backbone.get_layer(name): _op(backbone.get_layer(name), form)
                      for name, form in forms.items() if form in FORMS[1:]})
