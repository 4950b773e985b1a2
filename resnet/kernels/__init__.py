"""The job's own CPU kernels (TensorFlow custom ops), built at set-up for the machine's CPU.

Where a step's time outside oneDNN is TensorFlow's stock element-wise kernels (BENCHMARKS.md,
"The Xeon of issue 30 again": built without AVX-512, slower in bfloat16 than in float32), one op
of ours does the passes those kernels make over the same data in one, compiled with the CPU's
vector instructions: the 3x3 matmul form's columns (im2col) and their gradient (columns.cc);
the trained fold's kernel times its scale, rounded to bfloat16, and its gradient (fold.cc), both
ops of our own; bfloat16 ReluGrad, BiasAddGrad and AddN (backward.cc), and float32's momentum
update (update.cc): kernels registered for TensorFlow's op types above TensorFlow's own.

tools/setup.sh builds them (`python -m resnet.kernels.build`) into the environment, one library
per source, TensorFlow and compiler flags (library_path()); a training process loads it (load()).
Where none was built (a venv made by hand, no compiler) or with --noown_kernels, TensorFlow's
own ops compute the same maths: the job runs either way. Saved models and exports hold only
TensorFlow's ops: they load anywhere.
"""

import hashlib
import os
import sys
from typing import List, Optional

from absl import logging

SOURCES = ("fold.cc", "backward.cc", "columns.cc", "update.cc")  # compiled; they include HEADERS
HEADERS = ("common.h",)
HERE = os.path.dirname(os.path.abspath(__file__))


def compile_flags() -> List[str]:
    """g++'s flags for this TensorFlow (its headers, ABI and library), and ours."""
    import tensorflow as tf
    # -ffp-contract=off: no fused multiply-add, so each product rounds as TensorFlow's do
    # (update.cc's momentum update is bit-identical to TensorFlow's for it).
    return (["-shared", "-fPIC", "-O3", "-ffp-contract=off", "-Wno-deprecated-declarations"]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def library_path(prefix: Optional[str] = None) -> str:
    """Where the library for these sources, this TensorFlow and these flags lives: under the
    environment's prefix (a venv's own folder), so each Python's venv has its own build."""
    import tensorflow as tf
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    digest.update(" ".join([tf.__version__] + compile_flags()).encode())
    return os.path.join(prefix or sys.prefix, "lib", "resnet-kernels",
                        f"kernels-{digest.hexdigest()[:16]}.so")


_library = None  # the loaded ops, once load() found them


def load():
    """Load the library built for this environment, once: from here on its kernels run every
    bfloat16 ReluGrad, BiasAddGrad and AddN and float32 momentum update in this process
    (backward.cc, update.cc), and columns3x3() and scale_to() use its ops. Returns it, or None
    (logged) when it was not built. Before the training step is traced:
    resnet.model.set_precision(own_kernels=True) calls it."""
    global _library
    if _library is not None:
        return _library
    import tensorflow as tf
    path = library_path()
    if not os.path.exists(path):
        logging.info("resnet.kernels: not built for this environment (%s missing; tools/setup.sh "
                     "builds it): TensorFlow's own kernels compute the same", path)
        return None
    library = tf.load_op_library(path)

    @tf.RegisterGradient("ScaleToBfloat16")
    def _scale_to_bfloat16_grad(op, grad):
        return library.scale_to_bfloat16_grad(grad, op.inputs[0], op.inputs[1])

    @tf.RegisterGradient("Columns3x3")
    def _columns_grad(op, grad):
        return library.columns3x3_grad(grad)

    _library = library
    logging.info("resnet.kernels: the 3x3 matmul form's columns, and in bfloat16 ReluGrad, "
                 "BiasAddGrad, AddN and the trained fold's product, and the momentum update, run "
                 "the job's kernels (%s)", path)
    return _library


def loaded() -> bool:
    return _library is not None


def scale_to(kernel, scale, dtype):
    """cast(kernel * scale, dtype), `scale` along the kernel's last axis: the trained fold's
    kernel (resnet/training/frozen.py). Both float32; one op each way for bfloat16 once loaded."""
    import tensorflow as tf
    if _library is not None and tf.as_dtype(dtype) == tf.bfloat16:
        return _library.scale_to_bfloat16(kernel, scale)
    return tf.cast(kernel * scale, dtype)


def columns3x3(x):
    """The rows of a 3x3 'same' convolution at stride 1 as one matmul, [N, H, W, 9C] in (dy, dx,
    channel) order, and its gradient, one op each way where loaded; None where not (the caller
    builds them from TensorFlow's ops: resnet/training/conv_forms.py, columns())."""
    import tensorflow as tf
    if _library is None or x.dtype not in (tf.float32, tf.bfloat16) or x.shape.rank != 4:
        return None
    return _library.columns3x3(x)
