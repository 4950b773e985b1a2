"""Export a trained --model_dir as a TensorFlow SavedModel for TF Serving.

  python export.py --model_dir=runs/resnet_cifar10                 # -> runs/resnet_cifar10/export/1
  python export.py --model_dir=DIR --out=/models/resnet --precision=bf16

A thin entry point, as train_dist.py: the work is resnet.serving.export.export. The SavedModel
loads with TensorFlow alone: tf.saved_model.load(path).signatures["serving_default"].
"""

import sys

from absl import app, flags

from resnet.errors import EXIT_USAGE, UsageError

flags.DEFINE_string("model_dir", None, "The --model_dir of a finished training run.")
flags.DEFINE_string("out", None, "TF Serving's model base path: versions go in OUT/1, OUT/2, "
                    "... (default: MODEL_DIR/export).")
flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16"], "What the exported model computes in: "
                  "fp32 anywhere; bf16 for serving CPUs with AMX or AVX512-BF16.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1 or not FLAGS.model_dir:
        raise app.UsageError("usage: python export.py --model_dir=DIR [--out=DIR] "
                             "[--precision=fp32|bf16]")
    from resnet.serving.export import export
    try:
        path = export(FLAGS.model_dir, FLAGS.out, FLAGS.precision)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
