"""The frozen layers as the training step computes them, and every layer as inference computes
it: each convolution with the BatchNorm that follows it folded in, its weights held once in the
compute type.

A frozen BatchNorm (not trainable, so Keras runs it in inference mode whatever the model is
told) is an affine map per channel, and the frozen convolution before it is linear, so
  bn(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)
is one convolution with a bias: the normalisation pass over every frozen feature map goes, and
TensorFlow's remapper fuses the bias and the ReLU after it into the convolution. The folded
kernel is computed once a phase from the layers' own weights, in the compute type (bfloat16
under mixed_bfloat16), where Keras would cast the float32 kernel every step.

As conv_forms.py, it changes only how this process's layers compute, and only while a function
is traced inside `training()` (the frozen stages of a training step) or `inference()` (every
BatchNorm is an affine map when nothing trains: export.py's SavedModel and predict.py's Keras
path). The model's weights, checkpoints, the job's evaluation and model.keras keep Keras's own
Conv2D and BatchNormalization; the folded weights live in a Folds, not on the layers.
"""

import contextlib
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
from absl import logging


def pairs(backbone: tf.keras.Model, frozen_only: bool = True
          ) -> List[Tuple[tf.keras.layers.Layer, tf.keras.layers.Layer]]:
    """(convolution, BatchNorm) for each frozen Conv2D whose output only a frozen BatchNorm
    reads, in the backbone's order (ResNet50: every convolution of a frozen stage).
    `frozen_only=False`: for inference, where every layer is frozen (all 53 of ResNet50)."""
    found = []
    for layer in backbone.layers:
        # Not trainable: Keras runs it in inference mode (in the head phase every layer of the
        # backbone is, as the backbone is not trainable).
        if type(layer) is not tf.keras.layers.BatchNormalization or \
                (frozen_only and layer.trainable):
            continue
        if len(layer._inbound_nodes) != 1:  # called more than once: not one conv's follower
            continue
        conv = layer._inbound_nodes[0].inbound_layers
        if type(conv) is not tf.keras.layers.Conv2D or (frozen_only and conv.trainable) or \
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


def _identity(inputs, training=None, mask=None):
    return inputs


@contextlib.contextmanager
def _folded(found, folds: Folds) -> Iterator[None]:
    replaced = []
    try:
        for conv, bn in found:
            # In the layer's own compute type (bfloat16 under mixed_bfloat16): what it reads.
            kernel, bias = folds.refill(conv, bn, conv.compute_dtype)
            # Instance attributes shadow the classes' call; deleting them brings those back.
            conv.call = _folded_call(conv, kernel, bias)
            bn.call = _identity
            replaced += [conv, bn]
        yield
    finally:
        for layer in replaced:
            del layer.call


@contextlib.contextmanager
def training(backbone: tf.keras.Model, folds: Folds, enabled: bool = True) -> Iterator[int]:
    """Within it, the frozen convolutions compute with their BatchNorm folded in (yields how
    many): trace the training step here. Refills `folds` from the current weights on entry."""
    found = pairs(backbone) if enabled else []
    with _folded(found, folds):
        if found:
            logging.info("--fold_batchnorm: %d frozen convolutions train with their BatchNorm "
                         "folded in (%s)", len(found), found[0][0].compute_dtype)
        yield len(found)


@contextlib.contextmanager
def inference(model: tf.keras.Model, folds: Folds) -> Iterator[int]:
    """Within it, every convolution of `model` and the models nested in it (ResNet50's backbone)
    that a BatchNorm follows computes with it folded in, as nothing trains (yields how many):
    trace inference's functions here, and keep `folds`, whose variables they read. Not for a
    step that trains any layer."""
    nested = [model] + [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    found = [pair for m in nested for pair in pairs(m, frozen_only=False)]
    with _folded(found, folds):
        yield len(found)
