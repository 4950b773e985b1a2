"""ResNet50 from tf.keras.applications with a new head, one output per class.

The model takes raw RGB pixels (0..255, any of uint8/float) at its input size and does its own
preprocessing, so the saved model, the predict command and training all agree on it:
  resize to --image_size  ->  caffe preprocessing (RGB->BGR, minus the ImageNet mean)  ->  ResNet50
The input size is 32 for CIFAR (small images the model resizes); for larger images the input
pipeline crops them to --image_size itself and the model's input is that size (no resize).
The caffe step is a frozen 1x1 convolution (a channel permutation plus a bias) rather than a Lambda,
so the saved model holds only built-in layers and plain tf.keras.models.load_model opens it.
"""


import os
from typing import Callable, Mapping, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from resnet import kernels
from resnet.runtime import topology
from resnet.config import STAGES, check_image_size, check_weights
from resnet.errors import UsageError

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.resnet50.preprocess_input


# --precision's three ways to compute in bfloat16, variables and saved models float32 in each:
#   bf16         Keras's mixed_bfloat16 policy: each layer casts its inputs and weights to bf16;
#   bf16_amp     TensorFlow's oneDNN auto-mixed-precision graph pass rewrites the traced float32
#                graph, op by op from its allow list, to bf16 with the casts it needs;
#   bf16_fpmath  a float32 graph; oneDNN may compute its float32 convolutions and matmuls in
#                bf16 (ONEDNN_DEFAULT_FPMATH_MODE=BF16: read once, at its first primitive).
BF16_MODES = ("bf16", "bf16_amp", "bf16_fpmath")
AMP_OPTION = "auto_mixed_precision_onednn_bfloat16"
FPMATH_ENV = "ONEDNN_DEFAULT_FPMATH_MODE"


def bf16_warning(flags, precision: str = "bf16"):
    """A warning for a bf16 --precision on a CPU with these flags (topology.cpu_flags()) and no
    bfloat16 arithmetic, else None (also for None: flags unknown). Emulated bf16 is many times
    slower than float32 (BENCHMARKS.md, "float32 against bf16")."""
    if precision not in BF16_MODES or flags is None or topology.has_bf16(flags):
        return None
    if precision == "bf16_fpmath":
        return ("--precision=bf16_fpmath on a CPU without AMX or AVX512-BF16: oneDNN has no "
                "bfloat16 to compute in and trains in float32; use --precision=fp32")
    return (f"--precision={precision} on a CPU without AMX or AVX512-BF16: oneDNN emulates "
            "bfloat16, which trained at about a tenth of float32's speed here; use "
            "--precision=fp32")


def set_precision(precision: str, warn: bool = True, own_kernels: bool = False) -> None:
    """The compute type of everything built and traced from here on (BF16_MODES above); before
    the model is built, and for bf16_fpmath before oneDNN's first primitive in this process.
    `warn`: log bf16_warning for this CPU (rank 0 alone, as the job's other messages).
    `own_kernels` (--own_kernels, for a process that trains): the job's own kernels
    (resnet/kernels), loaded once for the process, before the step is traced."""
    if warn and (warning := bf16_warning(topology.cpu_flags(), precision)):
        logging.warning(warning)
    if own_kernels:
        kernels.load()
    if precision == "bf16_fpmath":
        os.environ.setdefault(FPMATH_ENV, "BF16")
    tf.config.optimizer.set_experimental_options({AMP_OPTION: precision == "bf16_amp"})
    tf.keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bf16" else "float32")


def numerics() -> str:
    """How this process computes, as a cache key part: the Keras policy's compute type, and the
    bf16 of the graph pass or of oneDNN's fpmath mode where either is on."""
    parts = [tf.keras.mixed_precision.global_policy().compute_dtype]
    if tf.config.optimizer.get_experimental_options().get(AMP_OPTION):
        parts.append("amp-bf16")
    if os.environ.get(FPMATH_ENV, "").upper() == "BF16":
        parts.append("fpmath-bf16")
    if kernels.loaded():  # conv_forms times forms that use them
        parts.append("own-kernels")
    return "+".join(parts)


def _caffe_preprocess() -> tf.keras.layers.Layer:
    # out[..., c] = in[..., 2 - c] - mean_bgr[c]: BGR order, zero-centred, no scaling.
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for c in range(3):
        kernel[0, 0, 2 - c, c] = 1.0
    bias = -np.asarray(IMAGENET_BGR_MEAN, np.float32)
    return tf.keras.layers.Conv2D(
        3, 1, name="caffe_preprocess", trainable=False, dtype="float32",
        kernel_initializer=tf.keras.initializers.Constant(kernel),
        bias_initializer=tf.keras.initializers.Constant(bias))


def _resolve_weights(weights: str):
    """Keras's `weights=`: 'imagenet' (Keras downloads and caches it in ~/.keras/models), a
    file, or None."""
    check_weights(weights)
    return None if weights == "none" else weights


def build(num_classes: int, image_size: int, weights: str, seed: int,
          batchnorm: str = "frozen", bn_momentum: float = 0.9,
          any_size: bool = False, input_size: int = 32) -> tf.keras.Model:
    """The fine-tune model; `backbone` is the ResNet50 layer, for freezing.

    batchnorm='frozen' keeps BatchNorm in inference mode; 'train' lets it normalise with batch
    statistics and track them with `bn_momentum` (Keras's 0.99 needs ~500 steps to forget the
    ImageNet statistics; 0.9 needs ~50). `any_size` builds the backbone for any input size, so
    that at_size() can make views at other sizes over the same weights. `input_size`: the side
    of the images the pipeline feeds (DataSet.input_size)."""
    check_image_size(image_size)
    tf.keras.utils.set_random_seed(seed)  # the same head on every rank before the broadcast
    side = None if any_size else image_size
    try:
        backbone = tf.keras.applications.ResNet50(
            include_top=False, weights=_resolve_weights(weights),
            input_shape=(side, side, 3), pooling="avg")
    except ValueError as e:  # Keras: layer count or shape mismatch between file and model
        raise UsageError(f"--weights {weights}: does not fit ResNet50 without its top ({e}); use "
                         "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") from e
    except OSError as e:  # not an HDF5 file, truncated, or no network for 'imagenet'
        raise UsageError(f"--weights {weights}: cannot load ({e}). For 'imagenet' offline, pass "
                         "the .h5 file by path") from e
    if batchnorm != "frozen":
        for layer in backbone.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    # A zero-initialised head starts at loss ln(10) with small gradients into the backbone; a
    # random one on ResNet50's large pooled features starts near 5 and knocks the pretrained
    # weights about in the first steps (measured here: NaN at lr 0.02).
    head = tf.keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits")
    return _assemble(tf.keras.layers.Rescaling(1.0, dtype="float32", name="to_float"),
                     _caffe_preprocess(), backbone, head, image_size, batchnorm,
                     resize=image_size != input_size or any_size, input_size=input_size)


def from_config(settings: Mapping, num_classes: int, input_size: Callable[[int], int],
                image_size: Optional[int] = None, weights: Optional[str] = None) -> tf.keras.Model:
    """The model a run's settings describe: Config.to_dict() for a run starting now, or what a
    checkpoint records (older ones may lack later keys). `input_size`: DataSet.input_size, the
    side of the images the pipeline feeds at an image size. `image_size` and `weights` override
    the settings' (an evaluation builds at the size the checkpoint last trained, from no
    weights, as the checkpoint then restores them)."""
    image_size = image_size or settings["image_size"]
    return build(num_classes, image_size, weights or settings.get("weights", "imagenet"),
                 settings.get("seed", 0), settings.get("batchnorm", "frozen"),
                 settings.get("bn_momentum", 0.9), any_size=bool(settings.get("start_image_size")),
                 input_size=input_size(image_size))


def batchnorm_is_affine(batchnorm: str) -> bool:
    """Whether a training step runs every BatchNorm in inference mode (--batchnorm=frozen: the
    moving statistics kept, a fixed affine map per channel that frozen.py may fold), rather than
    normalising by the batch's statistics (--batchnorm=train)."""
    return batchnorm == "frozen"


def _assemble(to_float, caffe, backbone_layer, head, image_size: int, batchnorm: str,
              resize: bool, input_size: int = 32) -> tf.keras.Model:
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    x = caffe(to_float(inputs))
    # Views at several sizes all have the resize layer (even a 32 px one, where it changes
    # nothing), so that their checkpoints, which name layers by position, are interchangeable.
    if resize:
        x = tf.keras.layers.Resizing(image_size, image_size, dtype="float32", name="resize")(x)
    if batchnorm_is_affine(batchnorm):
        # Inference mode (Keras's fine-tuning guide): the ImageNet statistics are kept and only
        # gamma/beta train. Measured here: with Keras's default momentum, trained BatchNorm left
        # the test accuracy at chance after 94 steps (the moving averages had not caught up).
        x = backbone_layer(x, training=False)
    else:
        x = backbone_layer(x)
    x = head(x)
    # Keep the softmax in float32 under mixed_bfloat16: bf16 probabilities lose the small ones.
    outputs = tf.keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return tf.keras.Model(inputs, outputs, name="resnet50_finetuned")


def at_size(model: tf.keras.Model, image_size: int, batchnorm: str) -> tf.keras.Model:
    """The same layers and weights as `model` (built with any_size=True), resizing to
    `image_size`: training one trains the other. For progressive resizing."""
    check_image_size(image_size, "image size")
    return _assemble(model.get_layer("to_float"), model.get_layer("caffe_preprocess"),
                     backbone(model), model.get_layer("logits"), image_size, batchnorm,
                     resize=True, input_size=int(model.input_shape[1]))


def backbone(model: tf.keras.Model) -> tf.keras.Model:
    return model.get_layer("resnet50")


def _stage(layer_name: str) -> str:
    """conv1..conv5 for ResNet50's layers ('conv3_block2_1_conv'), with the stem's pool in conv1;
    '' for the input and the final pooling, which hold no weights."""
    prefix = layer_name.split("_")[0]
    if prefix == "pool1":
        return "conv1"
    return prefix if prefix in STAGES else ""


def set_trainable(model: tf.keras.Model, phase: str, train_from: str = "conv1") -> None:
    """'head': only the new classifier trains. 'full': the backbone too, from stage `train_from`.

    Stages before `train_from` keep their ImageNet weights. No variable before them trains, so
    the gradient tape records none of their ops and their backward pass is never computed:
    conv1-conv3 hold nearly half of ResNet50's multiply-adds (measured speed-up: BENCHMARKS.md)."""
    bb = backbone(model)
    bb.trainable = phase == "full"  # Keras sets every layer inside to the same
    if phase != "full":
        return
    first = STAGES.index(train_from)
    for layer in bb.layers:
        stage = _stage(layer.name)
        if stage and STAGES.index(stage) < first:
            layer.trainable = False
