"""The convolutions as the training step computes them, and every layer as inference computes
it: each convolution with the BatchNorm that follows it folded in.

A frozen BatchNorm (not trainable, so Keras runs it in inference mode whatever the model is
told) is an affine map per channel, and the frozen convolution before it is linear, so
  bn(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)
is one convolution with a bias: the normalisation pass over every frozen feature map goes, and
TensorFlow's remapper fuses the bias and the ReLU after it into the convolution. The folded
kernel is computed once a phase from the layers' own weights, in the compute type (bfloat16
under mixed_bfloat16), where Keras would cast the float32 kernel every step.

A trained BatchNorm in inference mode (--batchnorm=frozen: the ImageNet statistics kept, gamma and
beta training) is the same affine map with a scale that trains, so the trained convolutions fold
it in the step's own graph, from the current weights: the kernel times the scale (a pass over
the weights, in float32, rounded once to the compute type), the convolution, one bias. The
gradients of gamma, beta and the kernel flow through that product, so the step computes the
same maths as Keras's layers, without BatchNorm's forward and backward passes over the trained
feature map. That trades passes over a feature map for passes over a kernel, so a pair folds only
where the map is the larger (ACTIVATIONS_PER_WEIGHT), which conv5's small maps at CIFAR sizes
mostly are not. (With --batchnorm=train, BatchNorm normalises by batch statistics:
no fold.)

As conv_forms.py, it changes only how this process's layers compute, and only while a function
is traced inside `training()` (the frozen stages of a training step) or `inference()` (every
BatchNorm is an affine map when nothing trains: the job's evaluation, export.py's SavedModel and
predict.py's Keras path). The model's weights, checkpoints and model.keras keep Keras's own
Conv2D and BatchNormalization; the folded weights live in a Folds, not on the layers.
"""

import contextlib
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from resnet import kernels


WHICH = ("frozen", "trained", "all")


def pairs(backbone: tf.keras.Model, which: str = "frozen"
          ) -> List[Tuple[tf.keras.layers.Layer, tf.keras.layers.Layer]]:
    """(convolution, BatchNorm) for each Conv2D whose output only a BatchNorm reads, in the
    backbone's order. which: 'frozen', both layers frozen (ResNet50: every convolution of a
    frozen stage); 'trained', both trained (for a step whose BatchNorm runs in inference mode);
    'all', for inference, where nothing trains (all 53 of ResNet50)."""
    assert which in WHICH, which
    found = []
    for layer in backbone.layers:
        if type(layer) is not tf.keras.layers.BatchNormalization:
            continue
        if len(layer._inbound_nodes) != 1:  # called more than once: not one conv's follower
            continue
        conv = layer._inbound_nodes[0].inbound_layers
        # Not trainable: Keras runs it in inference mode (in the head phase every layer of the
        # backbone is, as the backbone is not trainable). A conv and BatchNorm of which one
        # trains and one does not (not in ResNet50's stages) stay Keras's.
        if which != "all" and (layer.trainable, getattr(conv, "trainable", None)) != \
                ((which == "trained"),) * 2:
            continue
        if type(conv) is not tf.keras.layers.Conv2D or \
                len(conv._inbound_nodes) != 1 or len(conv._outbound_nodes) != 1 or \
                conv.activation not in (None, tf.keras.activations.linear) or \
                conv.groups != 1 or conv.data_format != "channels_last" or \
                tuple(layer.axis) not in ((3,), (-1,)):
            continue
        found.append((conv, layer))
    return found


def fold(conv, bn) -> Tuple[np.ndarray, np.ndarray]:
    """The folded (kernel, bias) in float32 (see the module's note)."""
    kernel = conv.kernel.numpy().astype(np.float64)
    bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else 0.0
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else 1.0
    beta = bn.beta.numpy().astype(np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    return ((kernel * scale).astype(np.float32),
            ((bias - bn.moving_mean.numpy()) * scale + beta).astype(np.float32))


class Folds:
    """The folded weights of one Trainer's layers, kept across epochs: a traced training step
    holds on to the variables it read, so they are made once and refilled, not replaced."""

    def __init__(self):
        self.variables: Dict[str, Tuple[tf.Variable, tf.Variable]] = {}

    def refill(self, conv, bn, dtype) -> Tuple[tf.Variable, tf.Variable]:
        kernel, bias = fold(conv, bn)
        key = f"{conv.name}/{dtype}"
        if key not in self.variables:
            self.variables[key] = (tf.Variable(kernel, trainable=False, dtype=dtype),
                                   tf.Variable(bias, trainable=False, dtype=dtype))
        else:
            self.variables[key][0].assign(tf.cast(kernel, dtype))
            self.variables[key][1].assign(tf.cast(bias, dtype))
        return self.variables[key]


def _folded_call(conv, kernel: tf.Variable, bias: tf.Variable):
    strides, padding = list(conv.strides), conv.padding.upper()
    dilations = list(conv.dilation_rate)

    def call(inputs):
        y = tf.nn.conv2d(inputs, kernel, strides, padding, dilations=dilations)
        return tf.nn.bias_add(y, bias)
    return call


def _float32(variable):
    # The float32 variable under Keras's AutoCastVariable, which a layer's call reads in the
    # compute type (bfloat16 under mixed_bfloat16): the fold multiplies before it rounds. The
    # tape records the read either way, so the gradient still reaches the trainable variable.
    return tf.convert_to_tensor(getattr(variable, "_variable", variable))


# Fold a trained pair in the step where its feature map has at least this many values per
# weight of the convolution (per output channel: batch x output pixels against kernel height x
# width x input channels). The fold's passes over the weights (the product, its two gradients,
# in float32) then cost less than BatchNorm's over the feature map (forward, backward).
ACTIVATIONS_PER_WEIGHT = 1.0


def _folds_in_step(conv, inputs) -> bool:
    # Decided when the step is traced, from the tensor it is traced with: with progressive
    # resizing (--start_image_size) the model takes any size, and a layer's map is known only
    # then (each epoch's size traces its own step).
    shape = conv.compute_output_shape(inputs.shape)
    if None in shape[:3]:  # a batch not known when traced: fold (the job's batches are)
        return True
    kh, kw, cin, _ = conv.kernel.shape
    return shape[0] * shape[1] * shape[2] >= ACTIVATIONS_PER_WEIGHT * kh * kw * cin


def _trained_call(conv, bn):
    """The trained convolution with its inference-mode BatchNorm folded in, computed in the
    step's graph from the weights as they are (see the module's note), or both as Keras
    computes them where the fold would cost more (ACTIVATIONS_PER_WEIGHT)."""
    def call(inputs):
        if not _folds_in_step(conv, inputs):
            y = type(conv).call(conv, inputs)
            return type(bn).call(bn, y, training=False)
        scale = tf.math.rsqrt(_float32(bn.moving_variance) + bn.epsilon)
        if bn.scale:
            scale *= _float32(bn.gamma)
        bias = -_float32(bn.moving_mean)
        if conv.use_bias:
            bias += _float32(conv.bias)
        bias *= scale
        if bn.center:
            bias += _float32(bn.beta)
        dtype = conv.compute_dtype
        # convolution_op: oneDNN's convolution, or the form conv_forms.training() gave it.
        # kernels.scale_to: the product and its rounding, one op each way where built.
        y = conv.convolution_op(inputs, kernels.scale_to(_float32(conv.kernel), scale, dtype))
        return tf.nn.bias_add(y, tf.cast(bias, dtype))
    return call


def _identity(inputs, training=None, mask=None):
    return inputs


@contextlib.contextmanager
def _folded(found, folds: Folds, trained=()) -> Iterator[None]:
    replaced = []
    try:
        for conv, bn in found:
            # In the layer's own compute type (bfloat16 under mixed_bfloat16): what it reads.
            kernel, bias = folds.refill(conv, bn, conv.compute_dtype)
            # Instance attributes shadow the classes' call; deleting them brings those back.
            conv.call = _folded_call(conv, kernel, bias)
            bn.call = _identity
            replaced += [conv, bn]
        for conv, bn in trained:
            conv.call = _trained_call(conv, bn)
            bn.call = _identity
            replaced += [conv, bn]
        yield
    finally:
        for layer in replaced:
            del layer.call


@contextlib.contextmanager
def training(backbone: tf.keras.Model, folds: Folds, enabled: bool = True,
             trained: bool = False) -> Iterator[Tuple[int, int]]:
    """Within it, the frozen convolutions compute with their BatchNorm folded in, and with
    `trained` (only where the step's BatchNorm runs in inference mode: model.batchnorm_is_affine;
    off by default, as folding batch statistics would change the maths) the trained ones whose
    feature map outweighs their kernel too, in the step. Yields how many pairs of each it may
    fold: trace the training step here. Refills `folds` from the current weights on entry."""
    found = pairs(backbone) if enabled else []
    in_step = pairs(backbone, "trained") if enabled and trained else []
    with _folded(found, folds, in_step):
        if found or in_step:
            logging.info("--fold_batchnorm: %d frozen convolutions train with their BatchNorm "
                         "folded in, %d trained ones fold theirs in each step where their "
                         "feature map outweighs their kernel (%s)", len(found), len(in_step),
                         (found or in_step)[0][0].compute_dtype)
        yield len(found), len(in_step)


@contextlib.contextmanager
def inference(model: tf.keras.Model, folds: Folds) -> Iterator[int]:
    """Within it, every convolution of `model` and the models nested in it (ResNet50's backbone)
    that a BatchNorm follows computes with it folded in, as nothing trains (yields how many):
    trace inference's functions here, and keep `folds`, whose variables they read. Not for a
    step that trains any layer."""
    nested = [model] + [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    found = [pair for m in nested for pair in pairs(m, "all")]
    with _folded(found, folds):
        yield len(found)
